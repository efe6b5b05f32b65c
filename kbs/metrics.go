package kbs

import (
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/cocoon-cc/cocoon/attestation/ear"
	"github.com/cocoon-cc/cocoon/protocol"
)

// metrics are the KBS's Prometheus series, kept in a registry of the
// server's own so several servers can live in one process (tests).
type metrics struct {
	registry     *prometheus.Registry
	requests     *prometheus.CounterVec
	latency      *prometheus.HistogramVec
	attestations *prometheus.CounterVec
	decisions    *prometheus.CounterVec
	appraisals   *prometheus.CounterVec
	releases     prometheus.Counter
	refusals     *prometheus.CounterVec
	// activity is the same events per minute, for the dashboard.
	activity *activity
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
		appraisals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kbs_attestation_appraisals_total", Help: "Successful attestations by TEE and appraisal status of the token (cpu0).",
		}, []string{"tee", "status"}),
		releases: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "kbs_resource_releases_total", Help: "Resources released to attested clients.",
		}),
		refusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kbs_resource_refusals_total", Help: "Resource requests refused, by error kind.",
		}, []string{"reason"}),
		activity: newActivity(),
	}
	m.registry.MustRegister(m.requests, m.latency, m.attestations, m.decisions, m.appraisals, m.releases, m.refusals,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// attestation counts an attestation of tee that ended at t with the
// claims of its token, nil when it failed. Its status is cpu0's, which
// resource policies read.
func (m *metrics) attestation(t time.Time, tee string, claims *ear.Claims) {
	if claims == nil {
		m.attestations.WithLabelValues(tee, "failure").Inc()
		m.activity.attestation(t, tee, outcomeFailure)
		return
	}
	status := string(ear.StatusNone)
	if a, ok := claims.Submods["cpu0"]; ok && a.Status != "" {
		status = string(a.Status)
	}
	m.attestations.WithLabelValues(tee, "success").Inc()
	m.appraisals.WithLabelValues(tee, status).Inc()
	m.activity.attestation(t, tee, status)
}

// resourceRequest counts a request for resource answered at t, released
// when err is nil, else refused with err's kind.
func (m *metrics) resourceRequest(t time.Time, resource string, err error) {
	if err == nil {
		m.releases.Inc()
		m.activity.request(t, resource, outcomeReleased)
		return
	}
	reason := string(protocol.KindInternal)
	if kerr := (*protocol.Error)(nil); errors.As(err, &kerr) {
		reason = string(kerr.Kind)
	}
	m.refusals.WithLabelValues(reason).Inc()
	m.activity.request(t, resource, reason)
}
