package e2e

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"
)

// BenchmarkPodNetwork measures pod-to-pod traffic on CNI's bridge network,
// coco pods (QEMU TCG, tap and tc redirects) against runc pods in the same
// run: TCP throughput (64 MiB piped through busybox nc to a sink in the
// other pod) and request latency (an HTTP/1.0 request to the other pod's
// busybox httpd per TCP connection, nc spawned for each, 20 in a row),
// both timed inside the client pod. The ratios are coco's over runc's.
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
	// elapsed runs script in a client and returns the nanoseconds it took,
	// measured in the pod (date +%s%N around it).
	elapsed := func(cid, script string) time.Duration {
		out := e.exec(ctx, b, rs, cid, "s=$(date +%s%N); "+script+"; echo $(( $(date +%s%N) - s ))")
		f := strings.Fields(out)
		if len(f) == 0 {
			b.Fatalf("no timing in %q", out)
		}
		ns, err := strconv.ParseInt(f[len(f)-1], 10, 64)
		if err != nil {
			b.Fatalf("timing %q: %v", out, err)
		}
		return time.Duration(ns)
	}
	const mib, requests = 64, 20
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
