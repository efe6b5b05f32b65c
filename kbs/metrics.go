package kbs

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// metrics are the KBS's Prometheus series, kept in a registry of the
// server's own so several servers can live in one process (tests).
type metrics struct {
	registry     *prometheus.Registry
	requests     *prometheus.CounterVec
	latency      *prometheus.HistogramVec
	attestations *prometheus.CounterVec
	decisions    *prometheus.CounterVec
	releases     prometheus.Counter
}

func newMetrics() *metrics {
	m := &metrics{
		registry: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kbs_http_requests_total", Help: "KBS HTTP requests by endpoint, method and status code.",
		}, []string{"endpoint", "method", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "kbs_http_request_duration_seconds", Help: "KBS HTTP request latency by endpoint.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2.5, 12),
		}, []string{"endpoint"}),
		attestations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kbs_attestations_total", Help: "Attestations by TEE and result (success, failure).",
		}, []string{"tee", "result"}),
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kbs_policy_decisions_total", Help: "Resource policy decisions (allow, deny, error).",
		}, []string{"decision"}),
		releases: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "kbs_resource_releases_total", Help: "Resources released to attested clients.",
		}),
	}
	m.registry.MustRegister(m.requests, m.latency, m.attestations, m.decisions, m.releases,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}
