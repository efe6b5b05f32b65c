package tpm_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/cocoon-cc/cocoon/attestation/verifier"
	vtpm "github.com/cocoon-cc/cocoon/attestation/verifier/tpm"
)

// TestTrusteeFixture verifies Trustee's sample as far as it goes: its nonce
// was fixed at capture time, so only the signature and PCR digest can be
// checked, and its 64-byte nonce predates the 32-byte wire rule.
func TestTrusteeFixture(t *testing.T) {
	raw := fixture(t)
	tcs, err := vtpm.New(vtpm.Options{}).Evaluate(context.Background(), raw, verifier.Expected{})
	if err != nil {
		t.Fatal(err)
	}
	if len(tcs) != 1 || tcs[0].Class != "cpu" {
		t.Fatalf("claims %+v", tcs)
	}
	c, ev := tcs[0].Claims, decodeEvidence(t, raw)
	zero, ones := strings.Repeat("0", 64), strings.Repeat("f", 64)
	for i, v := range ev.TPMQuote.PCRs {
		if got := c[pcrName(i)]; got != v {
			t.Errorf("%s = %v, want %s", pcrName(i), got, v)
		}
	}
	if c["pcr17"] != ones || c["pcr11"] != zero || c["init_data"] != zero {
		t.Errorf("pcr17 %v pcr11 %v init_data %v: not a fresh swtpm's", c["pcr17"], c["pcr11"], c["init_data"])
	}
	if rd, _ := c["report_data"].(string); len(rd) != 128 {
		t.Errorf("report_data %q, want the fixture's 64-byte nonce", rd)
	}
	if c["ak_public"] != ev.AKPublic {
		t.Errorf("ak_public %v", c["ak_public"])
	}

	rep, err := vtpm.ParseEvidence(raw)
	if err != nil {
		t.Fatal(err)
	}
	_, err = vtpm.New(vtpm.Options{}).Evaluate(context.Background(), raw, verifier.Expected{ReportData: rep.Attest.ExtraData[:32]})
	mustFail(t, err, vtpm.ErrNonce, verifier.ErrReportDataMismatch)
	_, err = vtpm.New(vtpm.Options{}).Evaluate(context.Background(), raw, verifier.Expected{InitDataDigest: make([]byte, 32)})
	mustFail(t, err, vtpm.ErrInitDataPCR, verifier.ErrInitDataMismatch)
}

func pcrName(i int) string { return fmt.Sprintf("pcr%02d", i) }

func TestTrustedAKEnrolmentExpires(t *testing.T) {
	raw := fixture(t)
	rep, err := vtpm.ParseEvidence(raw)
	if err != nil {
		t.Fatal(err)
	}
	end := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		now  time.Time
		pass bool
	}{{end.Add(-time.Second), true}, {end, true}, {end.Add(time.Second), false}} {
		v := vtpm.New(vtpm.Options{
			TrustedAKs: []vtpm.TrustedAK{{Key: rep.AK, NotAfter: end}},
			Now:        func() time.Time { return c.now },
		})
		_, err := v.Evaluate(context.Background(), raw, verifier.Expected{})
		if c.pass && err != nil {
			t.Errorf("at %s: %v", c.now, err)
		}
		if !c.pass {
			mustFail(t, err, vtpm.ErrUntrustedAK, verifier.ErrEndorsement)
		}
	}
}

func TestParseEvidenceRejectsWeakOrForeignAKs(t *testing.T) {
	small, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	edPub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der := mustDER(t, &small.PublicKey)
	b64 := base64.StdEncoding.EncodeToString
	for _, c := range []struct {
		name, ak string
		want     error
	}{
		{"1024-bit RSA", b64(der), vtpm.ErrAKPublic},
		{"Ed25519", b64(mustDER(t, edPub)), vtpm.ErrAKPublic},
		{"trailing garbage", b64(append(der, 0)), vtpm.ErrAKPublic},
		{"empty", "", vtpm.ErrAKPublic},
		{"not base64", "%%%", vtpm.ErrEncoding},
	} {
		t.Run(c.name, func(t *testing.T) {
			ev := decodeEvidence(t, fixture(t))
			ev.AKPublic = c.ak
			_, err := vtpm.ParseEvidence(encodeEvidence(t, ev))
			mustFail(t, err, verifier.ErrMalformedEvidence, c.want)
		})
	}
}

func mustDER(t *testing.T, pub any) []byte {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func TestInitDataMapping(t *testing.T) {
	sha384 := bytes.Repeat([]byte{0xab}, 48)
	if got := vtpm.InitDataExtension(sha384); !bytes.Equal(got, sha384[:32]) {
		t.Errorf("SHA-384 initdata extends %x, want its first 32 bytes", got)
	}
	if got := vtpm.Nonce([]byte{1, 2}); len(got) != 32 || got[0] != 1 || got[2] != 0 {
		t.Errorf("short report data becomes nonce %x, want it zero-padded to 32", got)
	}
}
