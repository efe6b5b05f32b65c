package kbs

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/cocoon-cc/cocoon/attestation/verifier"
	sampleverifier "github.com/cocoon-cc/cocoon/attestation/verifier/sample"
	"github.com/cocoon-cc/cocoon/guest/attester/sample"
	"github.com/cocoon-cc/cocoon/internal/testutil"
	"github.com/cocoon-cc/cocoon/kbs/client"
	"github.com/cocoon-cc/cocoon/kbs/respolicy"
	"github.com/cocoon-cc/cocoon/protocol"
)

// BenchmarkHandshakeInProcess runs full handshakes against an in-process
// server, per storage backend, to separate the server's cost from the
// binary's and the network's.
func BenchmarkHandshakeInProcess(b *testing.B) {
	for _, storage := range []string{"Memory", "Embedded"} {
		b.Run(storage, func(b *testing.B) {
			cfg, err := ParseConfig([]byte(fmt.Sprintf(`
[http_server]
insecure_http = true
[storage_backend]
storage_type = %q
[storage_backend.backends.embedded]
path = %q
%s`, storage, b.TempDir(), unlimited)), slog.New(slog.NewTextHandler(io.Discard, nil)))
			if err != nil {
				b.Fatal(err)
			}
			ctx := context.Background()
			srv, err := New(ctx, cfg, verifier.Registry{protocol.TeeSample: sampleverifier.Verifier{}}, slog.New(slog.NewTextHandler(io.Discard, nil)))
			if err != nil {
				b.Fatal(err)
			}
			defer srv.Close()
			for name, v := range map[string]any{"launch_digest": []string{"abcde"}, "svn": []string{"1"}, "major_version": 1, "minimum_minor_version": 1} {
				raw := fmt.Sprintf(`{"version":"0.1.0","type":"sample","payload":"%s"}`, b64(fmt.Sprintf(`{%q: %s}`, name, jsonOf(v))))
				if _, err := srv.rvps.Register(ctx, []byte(raw)); err != nil {
					b.Fatal(err)
				}
			}
			srv.resources.policy.Set(ctx, ResourcePolicyID, respolicy.Affirming)
			srv.resources.store.Put(ctx, ResourceNamespace, "default/key/b", []byte("x"))
			ts := httptest.NewServer(srv.Handler())
			defer ts.Close()
			// Keep-alive connections for every guest, as the e2e benchmark's
			// load generator has.
			tr := http.DefaultTransport.(*http.Transport).Clone()
			tr.MaxIdleConnsPerHost = 128
			start := testutil.SelfCPU()
			b.ResetTimer()
			b.SetParallelism(16) // as many guests as the e2e benchmark's busiest run, per CPU
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					c, _ := client.New(ts.URL, sample.Attester{}, client.Options{HTTP: &http.Client{Transport: tr}})
					if _, err := c.GetResource(ctx, "default/key/b"); err != nil {
						b.Error(err)
						return
					}
				}
			})
			// CPU per handshake, guests and server together: steadier than
			// wall time on a shared machine.
			b.ReportMetric(float64((testutil.SelfCPU()-start).Microseconds())/float64(b.N), "cpu-us/op")
		})
	}
}

// unlimited lifts the per-client rate limit and the session cap: a load
// generator is one client making thousands of handshakes.
const unlimited = "[limits]\nrcar_rate = 1e9\nrcar_burst = 1000000000\nmax_sessions = 1000000000\n"

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

func jsonOf(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}
