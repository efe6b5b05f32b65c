package feed

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"time"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/pmetric"
	"go.opentelemetry.io/collector/pdata/pmetric/pmetricotlp"

	"github.com/cocoon-cc/cocoon/guest/telemetry"
)

// ContainerStats are a container's cgroup figures.
type ContainerStats struct {
	ID, Name    string
	CPUNanos    uint64 // CPU time used since it started
	MemoryBytes uint64 // memory charged now
}

// RunMetrics reports the guest's memory and the containers' stats every
// interval until ctx ends.
func (f *Feed) RunMetrics(ctx context.Context, interval time.Duration, stats func() []ContainerStats) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
		case <-ctx.Done():
			return
		}
		md := metrics(stats())
		sctx, cancel := context.WithTimeout(ctx, sendTimeout)
		if _, err := pmetricotlp.NewGRPCClient(f.cc).Export(sctx, pmetricotlp.NewExportRequestFromMetrics(md)); err != nil {
			f.log.Warn("telemetry: metrics not shipped", "err", err)
		}
		cancel()
	}
}

// metrics are the guest's memory (/proc/meminfo) and each container's
// CPU time and memory, in OpenTelemetry's semantic conventions' names.
func metrics(containers []ContainerStats) pmetric.Metrics {
	md, sm := telemetry.NewMetrics("github.com/cocoon-cc/cocoon/guest/telemetry/feed")
	now := pcommon.NewTimestampFromTime(time.Now())
	if total, avail, err := meminfo(); err == nil {
		telemetry.Gauge(sm, "system.memory.limit", "By", now, int64(total))
		telemetry.Gauge(sm, "system.memory.usage", "By", now, int64(total-avail)).Attributes().PutStr("system.memory.state", "used")
	}
	for _, c := range containers {
		for _, dp := range []pmetric.NumberDataPoint{
			telemetry.Gauge(sm, "container.cpu.time", "ns", now, int64(c.CPUNanos)),
			telemetry.Gauge(sm, "container.memory.usage", "By", now, int64(c.MemoryBytes)),
		} {
			dp.Attributes().PutStr("container.id", c.ID)
			if c.Name != "" {
				dp.Attributes().PutStr("k8s.container.name", c.Name)
			}
		}
	}
	return md
}

// meminfo reads the guest's total and available memory in bytes.
func meminfo() (total, avail uint64, err error) {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0, 0, err
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		var key string
		var kib uint64
		if _, err := fmt.Sscanf(sc.Text(), "%s %d", &key, &kib); err != nil {
			continue
		}
		switch key {
		case "MemTotal:":
			total = kib << 10
		case "MemAvailable:":
			avail = kib << 10
		}
	}
	if total == 0 || avail > total {
		return 0, 0, fmt.Errorf("/proc/meminfo: no MemTotal/MemAvailable")
	}
	return total, avail, nil
}
