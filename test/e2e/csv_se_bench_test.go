package e2e

import (
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/cocoon-cc/cocoon/attestation/verifier/csv/csvtest"
	"github.com/cocoon-cc/cocoon/attestation/verifier/se/sesttest"
	"github.com/cocoon-cc/cocoon/guest/attester"
)

// BenchmarkRCARCSVSE measures full handshakes against the kbs binary with
// Hygon CSV evidence (a test chip's version 2 report with its HSK/CEK and
// event log, affirming once its launch digest is registered) and IBM SE
// evidence (the KBS issues an attestation request per handshake, a test
// Ultravisor answers it). The guests' side (SM2 signing, the Ultravisor's
// ECDH) runs in this process, on the same CPUs.
func BenchmarkRCARCSVSE(b *testing.B) {
	t := &testing.T{}
	p := csvtest.New(t)
	sdir, spki, hdr := seDir(t)
	root := filepath.Join(b.TempDir(), "hrk.cert")
	os.WriteFile(root, p.HRKCert, 0o600)
	data := b.TempDir()
	cfg, url := kbsConfig(t, data, "http", fmt.Sprintf("[attestation_service.verifiers]\noffline = true\ncsv_hrk = %q\nse_dir = %q\n%s", root, sdir, benchKBS))
	k := startKBS(t, cfg, url, data, nil)
	defer k.stop()
	setResource(t, []string{"--url", url}, k.adminKey(), "default/key/bench", []byte("benchmark secret"))
	mustClient(t, "--url", url, "config", "--auth-private-key", k.adminKey(), "set-sample-reference-value", "csv_measure", hex.EncodeToString(p.Measure))
	if t.Failed() {
		b.Fatal("setup failed")
	}
	for _, g := range []struct {
		name  string
		guest attester.Attester
	}{{"csv", csvtest.Attester{PKI: p, T: t}}, {"se", sesttest.Attester{UV: spki.NewUltravisor(t, hdr)}}} {
		for _, clients := range []int{1, 8} {
			b.Run(fmt.Sprintf("%s/clients=%d", g.name, clients), func(b *testing.B) {
				benchHandshakes(b, k.cmd.Process.Pid, clients, benchFetch(url, g.guest))
			})
		}
	}
}
