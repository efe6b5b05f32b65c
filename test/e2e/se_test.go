package e2e

import (
	"context"
	"crypto/rand"
	"crypto/sha512"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cocoon-cc/cocoon/attestation/verifier/se"
	"github.com/cocoon-cc/cocoon/attestation/verifier/se/sesttest"
	"github.com/cocoon-cc/cocoon/kbs/client"
	"github.com/cocoon-cc/cocoon/protocol"
)

// seDir lays out a test IBM chain, host-key document, image header and
// seal key as Trustee's /run/confidential-containers/ibmse.
func seDir(t *testing.T) (string, *sesttest.PKI, []byte) {
	p := sesttest.New(t)
	hdr := sesttest.Header()
	dir := t.TempDir()
	p.WriteDir(t, dir, hdr)
	key := make([]byte, 32)
	rand.Read(key)
	if err := os.WriteFile(filepath.Join(dir, "seal.key"), key, 0o600); err != nil {
		t.Fatal(err)
	}
	return dir, p, hdr
}

// TestKBSReleasesToSE runs the protocol against the real kbs binary with
// an SE guest of a test machine: the KBS's challenge is an attestation
// request encrypted to the host-key document, the guest's Ultravisor
// answers it over the runtime data's SHA-512, and the default policy
// affirms it. Another image on the machine is refused.
func TestKBSReleasesToSE(t *testing.T) {
	dir, p, hdr := seDir(t)
	data := t.TempDir()
	cfg, url := kbsConfig(t, data, "http", fmt.Sprintf("[attestation_service.verifiers]\noffline = true\nse_dir = %q\n", dir))
	k := startKBS(t, cfg, url, data, nil)
	setResource(t, []string{"--url", url}, k.adminKey(), "default/key/se", []byte("for the SE guest"))

	fetch := func(a sesttest.Attester) ([]byte, error) {
		return fetchAttested(url, a, client.Options{}, "default/key/se")
	}
	got, err := fetch(sesttest.Attester{UV: p.NewUltravisor(t, hdr)})
	if err != nil || string(got) != "for the SE guest" {
		t.Fatalf("SE guest: %q, %v", got, err)
	}
	var kerr *protocol.Error
	if _, err := fetch(sesttest.Attester{UV: p.NewUltravisor(t, sesttest.Header())}); !errors.As(err, &kerr) || kerr.Kind != protocol.KindAttestation {
		t.Fatalf("another image: %v, want AttestationError", err)
	}
	if _, err := fetch(sesttest.Attester{UV: sesttest.New(t).NewUltravisor(t, hdr)}); !errors.Is(err, sesttest.ErrNoKeySlot) {
		t.Fatalf("another machine: %v, want no key slot", err)
	}
}

// TestVerifyOfflineSE: attestation-service verify checks an SE answer
// with the directory whose seal key sealed its request.
func TestVerifyOfflineSE(t *testing.T) {
	dir, p, hdr := seDir(t)
	o, err := se.LoadDir(dir, p.Now)
	if err != nil {
		t.Fatal(err)
	}
	v, err := se.New(o)
	if err != nil {
		t.Fatal(err)
	}
	ch, err := v.Challenge(context.Background(), "session")
	if err != nil {
		t.Fatal(err)
	}
	rd := sha512.Sum512([]byte("runtime data"))
	r, err := p.NewUltravisor(t, hdr).Respond(ch, rd[:])
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := r.MarshalJSON()
	ev := filepath.Join(t.TempDir(), "se.json")
	os.WriteFile(ev, raw, 0o600)
	out, err := attestationService(t, "verify", "--tee", "se", "--evidence", ev, "--certs", dir, "--report-data", hex.EncodeToString(rd[:]))
	if err != nil || !strings.Contains(out, "evidence verified") || !strings.Contains(out, `"attestation_phkh"`) {
		t.Errorf("genuine SE evidence: %v\n%s", err, out)
	}
	r.Measurement[0] ^= 1
	raw, _ = r.MarshalJSON()
	os.WriteFile(ev, raw, 0o600)
	if _, err := attestationService(t, "verify", "--tee", "se", "--evidence", ev, "--certs", dir); err == nil || !strings.Contains(err.Error(), "se measurement") {
		t.Errorf("flipped measurement: %v", err)
	}
}
