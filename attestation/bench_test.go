package attestation

import (
	"testing"
)

// BenchmarkEvaluate is one sample appraisal with the default policy and
// every reference value registered: verification, policy and signing.
func BenchmarkEvaluate(b *testing.B) {
	t := &testing.T{}
	f := newFixture(t, Config{})
	f.register(t, allSampleValues)
	req := sampleRequest(t, "bm9uY2U=")
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := f.svc.Evaluate(ctx, []Request{req}, ""); err != nil {
			b.Fatal(err)
		}
	}
}
