package kbs

import (
	"testing"
	"time"
)

// BenchmarkSVIDIssuance: X.509-SVIDs issued a second by an in-process KBS
// (token check, TEE-key signature, policy, certificate, sealing) against
// RCAR handshakes a second on the same KBS; ratio = SVIDs per handshake
// time. A guest makes one handshake and then renews at half-life, so the
// ratio says how much cheaper a renewal is than a new attestation.
func BenchmarkSVIDIssuance(b *testing.B) {
	k := newSPIFFEKBS(b)
	if err := k.admin(b).SetSPIFFEPolicy(bg, spiffePolicy); err != nil {
		b.Fatal(err)
	}
	init := spiffeInitdata("/ns/prod/web")
	const handshakes = 50
	start := time.Now()
	for range handshakes {
		if _, err := spiffeClient(b, k.ts.URL, init, nil).Attest(bg); err != nil {
			b.Fatal(err)
		}
	}
	rcarRate := handshakes / time.Since(start).Seconds()
	c := spiffeClient(b, k.ts.URL, init, nil)
	_, csr := newCSR(b)
	if _, err := c.X509SVID(bg, csr); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	start = time.Now()
	for b.Loop() {
		if _, err := c.X509SVID(bg, csr); err != nil {
			b.Fatal(err)
		}
	}
	svidRate := float64(b.N) / time.Since(start).Seconds()
	b.ReportMetric(svidRate, "svids/s")
	b.ReportMetric(rcarRate, "rcar/s")
	b.ReportMetric(svidRate/rcarRate, "svid/rcar")
}
