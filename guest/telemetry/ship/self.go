package ship

import (
	"time"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/pmetric"

	"github.com/cocoon-cc/cocoon/guest/telemetry"
)

func pcommonNow() pcommon.Timestamp { return pcommon.NewTimestampFromTime(time.Now()) }

// counters are the shipper's own metrics: items exported and dropped per
// signal since start (cumulative sums), and the buffer's use.
func (s *Shipper) counters(start pcommon.Timestamp) pmetric.Metrics {
	md, sm := telemetry.NewMetrics("github.com/cocoon-cc/cocoon/guest/telemetry/ship")
	now := pcommonNow()
	for _, c := range []struct {
		name string
		get  func(*Counts) int64
	}{
		{"cocoon.telemetry.exported", func(c *Counts) int64 { return c.Exported.Load() }},
		{"cocoon.telemetry.dropped", func(c *Counts) int64 { return c.Dropped.Load() }},
	} {
		m := sm.Metrics().AppendEmpty()
		m.SetName(c.name)
		m.SetUnit("{item}")
		sum := m.SetEmptySum()
		sum.SetIsMonotonic(true)
		sum.SetAggregationTemporality(pmetric.AggregationTemporalityCumulative)
		for _, sig := range signals {
			dp := sum.DataPoints().AppendEmpty()
			dp.SetStartTimestamp(start)
			dp.SetTimestamp(now)
			dp.SetIntValue(c.get(s.count[sig]))
			dp.Attributes().PutStr("signal", sig)
		}
	}
	telemetry.Gauge(sm, "cocoon.telemetry.buffer.used", "By", now, int64(s.buf.used()))
	return md
}
