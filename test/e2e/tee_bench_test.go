package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cocoon-cc/cocoon/attestation/verifier/cca/ccatest"
	"github.com/cocoon-cc/cocoon/guest/attester"
	"github.com/cocoon-cc/cocoon/kbs/client"
)

// BenchmarkRCARDevices measures full handshakes against the kbs binary
// with hardware evidence: a CCA realm (live realm tokens on Trustee's
// example platform token), alone and with an NVIDIA Hopper GPU's report
// as additional evidence, each appraised affirming by the default
// policies and released by a resource policy requiring every submodule
// affirming. The guests' signing (the RAK's and the GPU's, done by
// hardware on real machines) runs in this process, on the same CPUs.
func BenchmarkRCARDevices(b *testing.B) {
	t := &testing.T{}
	iss := ccaIssuer(t)
	k, url, gpu, dir := deviceKBS(t, benchKBS)
	defer k.stop()
	admin := []string{"--url", url, "config", "--auth-private-key", k.adminKey()}
	setResource(t, []string{"--url", url}, k.adminKey(), "default/key/bench", []byte("benchmark secret"))
	policy := filepath.Join(dir, "all.rego")
	os.WriteFile(policy, []byte("package policy\nimport rego.v1\ndefault allow := false\n"+
		"allow if {\n\tcount(input.submods) > 0\n\tevery _, s in input.submods { s[\"ear.status\"] == \"affirming\" }\n}\n"), 0o600)
	mustClient(t, append(admin, "set-resource-policy", "--policy-file", policy)...)
	mustClient(t, append(admin, "set-sample-reference-value", "cca.realm.cca-realm-initial-measurement", ccaRIM)...)
	registerGPUReferenceValues(t, admin, dir)
	if t.Failed() {
		b.Fatal("setup failed")
	}
	for _, c := range []struct {
		name    string
		devices []attester.Attester
	}{{"cca", nil}, {"cca+nvidia", []attester.Attester{gpu}}} {
		for _, clients := range []int{1, 8} {
			b.Run(fmt.Sprintf("%s/clients=%d", c.name, clients), func(b *testing.B) {
				benchHandshakes(b, k.cmd.Process.Pid, clients, func() ([]byte, error) {
					return fetchAttested(url, ccatest.Attester{Issuer: iss}, client.Options{Devices: c.devices}, "default/key/bench")
				})
			})
		}
	}
}

// benchHandshakes runs b.N fetches of the benchmark secret from clients
// goroutines and reports handshakes/s, the median latency and the KBS's
// (pid's) CPU per handshake.
func benchHandshakes(b *testing.B, pid, clients int, fetch func() ([]byte, error)) {
	lat := make([]time.Duration, b.N)
	var next atomic.Int64
	serverCPU := procCPU(pid)
	start := time.Now()
	run(b.N, clients, func() {
		t0 := time.Now()
		got, err := fetch()
		if err != nil || string(got) != "benchmark secret" {
			b.Errorf("handshake: %q, %v", got, err)
		}
		lat[next.Add(1)-1] = time.Since(t0)
	})
	elapsed := time.Since(start)
	serverCPU = procCPU(pid) - serverCPU
	slices.Sort(lat)
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "handshakes/s")
	b.ReportMetric(ms(lat[len(lat)/2]), "p50-ms")
	b.ReportMetric(float64(serverCPU.Microseconds())/float64(b.N), "server-cpu-us/op")
}

// benchFetch is a fetch of the benchmark secret by a new client with att
// (a whole handshake).
func benchFetch(url string, att attester.Attester) func() ([]byte, error) {
	return func() ([]byte, error) { return fetchAttested(url, att, client.Options{}, "default/key/bench") }
}
