package e2e

import (
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"testing"

	vtpm "github.com/cocoon-cc/cocoon/attestation/verifier/tpm"
	"github.com/cocoon-cc/cocoon/guest/attester/tpm"
	"github.com/cocoon-cc/cocoon/guest/attester/tpm/swtpmtest"
	"github.com/cocoon-cc/cocoon/kbs/client"
	"github.com/cocoon-cc/cocoon/protocol"
)

// TestKBSReleasesOnlyToAffirmingTPM runs the whole protocol with real TPM
// evidence (swtpm) against the real kbs binary and its default policies:
// nothing is released until the owner registers the guest's AK and PCR 11,
// and then only to that TPM.
func TestKBSReleasesOnlyToAffirmingTPM(t *testing.T) {
	sw := swtpmtest.Start(t)
	att, err := tpm.Open(tpm.Options{TPM: sw.Addr})
	if err != nil {
		t.Fatal(err)
	}
	defer att.Close()

	data := t.TempDir()
	cfg, url := kbsConfig(t, data, "http", "")
	k := startKBS(t, cfg, url, data, nil)
	admin := []string{"--url", url, "config", "--auth-private-key", k.adminKey()}
	setResource(t, []string{"--url", url}, k.adminKey(), "default/key/tpm", []byte("for the TPM guest"))

	fetch := func() ([]byte, error) { return fetchAttested(url, att, client.Options{}, "default/key/tpm") }
	var kerr *protocol.Error
	if _, err := fetch(); !errors.As(err, &kerr) || kerr.Kind != protocol.KindPolicyDeny {
		t.Fatalf("unknown TPM: %v, want PolicyDeny", err)
	}

	der, _ := x509.MarshalPKIXPublicKey(att.AKPublic())
	ev, err := att.Evidence(context.Background(), make([]byte, 32))
	if err != nil {
		t.Fatal(err)
	}
	rep, err := vtpm.ParseEvidence(ev)
	if err != nil {
		t.Fatal(err)
	}
	pcr11 := hex.EncodeToString(rep.PCRs[11])
	mustClient(t, append(admin, "set-sample-reference-value", "tpm_pcr11", pcr11)...)
	// Another machine's AK vouches for nothing.
	mustClient(t, append(admin, "set-sample-reference-value", "trusted_aks", "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE")...)
	if _, err := fetch(); !errors.As(err, &kerr) || kerr.Kind != protocol.KindPolicyDeny {
		t.Fatalf("untrusted AK: %v, want PolicyDeny", err)
	}

	mustClient(t, append(admin, "set-sample-reference-value", "trusted_aks", base64.StdEncoding.EncodeToString(der))...)
	got, err := fetch()
	if err != nil || string(got) != "for the TPM guest" {
		t.Fatalf("affirming TPM guest: %q, %v", got, err)
	}
}
