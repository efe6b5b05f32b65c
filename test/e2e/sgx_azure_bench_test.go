package e2e

import (
	"fmt"
	"testing"
)

// BenchmarkRCARSGXAzure measures full handshakes against the kbs binary
// with SGX evidence (the test PKI's quotes of Trustee's enclave) and the
// Azure confidential VMs' (the real attesters on swtpm, their SNP report
// or TD quote re-signed by a test chain per nonce), each affirming once
// its measurements are registered. The guests' side (quote signing, the
// vTPM's quote, the paravisor's SNP signature) runs in this process and
// swtpm, on the same CPUs; one VM's vTPM serves one request at a time.
func BenchmarkRCARSGXAzure(b *testing.B) {
	for _, tee := range liveGuests {
		b.Run(tee.tee, func(b *testing.B) {
			t := &testing.T{}
			g := tee.guest(b)
			data := b.TempDir()
			cfg, url := kbsConfig(t, data, "http", "[attestation_service.verifiers]\n"+g.verifiers+benchKBS)
			k := startKBS(t, cfg, url, data, nil)
			defer k.stop()
			setResource(t, []string{"--url", url}, k.adminKey(), "default/key/bench", []byte("benchmark secret"))
			for name, value := range g.refs {
				mustClient(t, "--url", url, "config", "--auth-private-key", k.adminKey(), "set-sample-reference-value", name, value)
			}
			if t.Failed() {
				b.Fatal("setup failed")
			}
			for _, clients := range []int{1, 8} {
				b.Run(fmt.Sprintf("clients=%d", clients), func(b *testing.B) {
					benchHandshakes(b, k.cmd.Process.Pid, clients, benchFetch(url, g.att))
				})
			}
		})
	}
}
