package telemetry

import (
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/pmetric"
)

// ServiceName is the resource's service.name of what the guest itself
// reports (container output, guest and container metrics, its counters).
const ServiceName = "cocoon-guest"

// NewMetrics starts a metrics batch of the guest's, scope names the
// package that makes it.
func NewMetrics(scope string) (pmetric.Metrics, pmetric.ScopeMetrics) {
	md := pmetric.NewMetrics()
	rm := md.ResourceMetrics().AppendEmpty()
	rm.Resource().Attributes().PutStr("service.name", ServiceName)
	sm := rm.ScopeMetrics().AppendEmpty()
	sm.Scope().SetName(scope)
	return md, sm
}

// Gauge adds a one-point integer gauge and returns the point, for
// attributes.
func Gauge(sm pmetric.ScopeMetrics, name, unit string, now pcommon.Timestamp, v int64) pmetric.NumberDataPoint {
	m := sm.Metrics().AppendEmpty()
	m.SetName(name)
	m.SetUnit(unit)
	dp := m.SetEmptyGauge().DataPoints().AppendEmpty()
	dp.SetTimestamp(now)
	dp.SetIntValue(v)
	return dp
}
