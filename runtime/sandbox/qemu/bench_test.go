package qemu

import (
	"context"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// BenchmarkBootToAgent measures a TCG VM's boot until its agent answers
// GetGuestDetails, the QEMU process's RSS then, and in the same run the
// floor: the same VM whose kernel finds no init and powers off at once
// (firmware and kernel boot alone).
func BenchmarkBootToAgent(b *testing.B) {
	run := func(b *testing.B, params string, measure func(*Sandbox) error) {
		var total time.Duration
		var rss int64
		for i := 0; i < b.N; i++ {
			o := Options{Accel: "tcg", KernelParams: params}
			o.Kernel, o.Initrd = guestFor(b)
			s, err := New(benchConfig(b), o)
			if err != nil {
				b.Fatal(err)
			}
			start := time.Now()
			if err := measure(s); err != nil {
				b.Fatal(err)
			}
			total += time.Since(start)
			rss = vmRSS(s.Info().Pid)
			s.Stop(context.Background())
		}
		b.ReportMetric(total.Seconds()/float64(b.N), "s/boot")
		if rss > 0 {
			b.ReportMetric(float64(rss)/(1<<20), "MiB-rss")
		}
	}
	b.Run("agent-ready", func(b *testing.B) {
		run(b, "", func(s *Sandbox) error {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			return s.Start(ctx)
		})
	})
	b.Run("floor-kernel-only", func(b *testing.B) {
		run(b, "rdinit=/no/init", func(s *Sandbox) error {
			if err := s.launch(); err != nil {
				return err
			}
			<-s.Done()
			return nil
		})
	})
}

func vmRSS(pid int) int64 {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.Fields(v)[0], 10, 64)
			return kb << 10
		}
	}
	return 0
}
