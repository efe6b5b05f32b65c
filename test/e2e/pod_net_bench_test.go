package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// BenchmarkPodNetwork measures pod-to-pod traffic on CNI's bridge network,
// coco pods (QEMU TCG, tap and tc redirects) against runc pods in the same
// run: TCP throughput (16 MiB piped through busybox nc to a sink in the
// other pod) and request latency (an HTTP/1.0 request to the other pod's
// busybox httpd per TCP connection, nc spawned for each, 100 in a row),
// both timed around the client's exec less an empty exec's time. The ratios are coco's over runc's.
func BenchmarkPodNetwork(b *testing.B) {
	e := newVMPodEnv(b)
	rs := e.ctrd.RuntimeService(b)
	ctx := context.Background()
	const server = "mkdir -p /www && echo ok > /www/index.html && /bin/busybox httpd -p 8080 -h /www && exec /bin/busybox nc -ll -p 5001 -e /bin/sh -c 'cat >/dev/null'"
	type pair struct{ client, serverIP string }
	pairs := map[string]pair{}
	for _, handler := range []string{"runc", "coco"} {
		_, ip, _ := e.runNetPodOn(ctx, b, rs, handler, handler+"-server", server)
		c, _, _ := e.runNetPodOn(ctx, b, rs, handler, handler+"-client", "exec /bin/sleep 100000")
		pairs[handler] = pair{client: c.cid, serverIP: ip}
	}
	// elapsed runs script in a client and returns how long it took: the
	// exec's time less that of an empty exec in the same pod (busybox's
	// date has no sub-second clock).
	run := func(cid, script string) time.Duration {
		start := time.Now()
		e.exec(ctx, b, rs, cid, script)
		return time.Since(start)
	}
	elapsed := func(cid, script string) time.Duration {
		var empty time.Duration
		for range 3 {
			empty += run(cid, "true") / 3
		}
		return max(run(cid, script)-empty, time.Microsecond)
	}
	const mib, requests = 16, 100
	bytesPerSec, perRequest := map[string]float64{}, map[string]float64{}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for handler, p := range pairs {
			d := elapsed(p.client, fmt.Sprintf("dd if=/dev/zero bs=1M count=%d 2>/dev/null | nc -w 5 %s 5001", mib, p.serverIP))
			bytesPerSec[handler] += float64(mib<<20) / d.Seconds() / float64(b.N)
			d = elapsed(p.client, fmt.Sprintf("for i in $(seq %d); do printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc %s 8080 >/dev/null; done", requests, p.serverIP))
			perRequest[handler] += float64(d.Microseconds()) / 1000 / requests / float64(b.N)
		}
	}
	for _, h := range []string{"runc", "coco"} {
		b.ReportMetric(bytesPerSec[h]/(1<<20), h+"-MiB/s")
		b.ReportMetric(perRequest[h], h+"-ms/req")
	}
	b.ReportMetric(bytesPerSec["coco"]/bytesPerSec["runc"], "coco/runc-throughput")
	b.ReportMetric(perRequest["coco"]/perRequest["runc"], "coco/runc-latency")
}
