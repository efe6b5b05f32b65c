package se_test

import (
	"context"
	"crypto/elliptic"
	"crypto/sha512"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"errors"
	"testing"
	"time"

	"github.com/cocoon-cc/cocoon/attestation/verifier"
	"github.com/cocoon-cc/cocoon/attestation/verifier/se"
	"github.com/cocoon-cc/cocoon/attestation/verifier/se/sesttest"
)

var ctx = context.Background()

// setup is a verifier loaded from Trustee's directory layout, and the
// Ultravisor of the machine its host-key document is for.
func setup(t testing.TB) (*se.Verifier, *sesttest.Ultravisor, *sesttest.PKI) {
	v, uv, p, _ := setupOpts(t)
	return v, uv, p
}

func setupOpts(t testing.TB) (*se.Verifier, *sesttest.Ultravisor, *sesttest.PKI, se.Options) {
	t.Helper()
	p := sesttest.New(t)
	hdr := sesttest.Header()
	dir := t.TempDir()
	p.WriteDir(t, dir, hdr)
	o, err := se.LoadDir(dir, p.Now)
	if err != nil {
		t.Fatal(err)
	}
	v, err := se.New(o)
	if err != nil {
		t.Fatal(err)
	}
	return v, p.NewUltravisor(t, hdr), p, o
}

func reportData(s string) []byte {
	h := sha512.Sum512([]byte(s))
	return h[:]
}

// evidence runs one exchange: the verifier's challenge for base, the
// Ultravisor's answer carrying rd.
func evidence(t testing.TB, v *se.Verifier, uv *sesttest.Ultravisor, base string, rd []byte) (string, *se.Response) {
	t.Helper()
	ch, err := v.Challenge(ctx, base)
	if err != nil {
		t.Fatal(err)
	}
	r, err := uv.Respond(ch, rd)
	if err != nil {
		t.Fatal(err)
	}
	return ch, r
}

func TestVerify(t *testing.T) {
	v, uv, _ := setup(t)
	rd := reportData("runtime data")
	ch, r := evidence(t, v, uv, "session", rd)
	if err := v.CheckChallenge(ch, "session"); err != nil {
		t.Fatalf("challenge of its session: %v", err)
	}
	if err := v.CheckChallenge(ch, "another session"); !errors.Is(err, se.ErrChallenge) {
		t.Errorf("challenge of another session: %v", err)
	}
	raw, _ := r.MarshalJSON()
	claims, err := v.Evaluate(ctx, raw, verifier.Expected{ReportData: rd})
	if err != nil {
		t.Fatal(err)
	}
	c := claims[0].Claims
	phkh := hex.EncodeToString(se.PHKH(uv.HostKey.PublicKey()))
	if c["version"] != 0x100 || c["cuid"] != hex.EncodeToString(uv.CUID) || c["tag"] != hex.EncodeToString(uv.Tags.Tag()) ||
		c["image_phkh"] != phkh || c["attestation_phkh"] != phkh || c["report_data"] != hex.EncodeToString(rd) {
		t.Errorf("claims: %v", c)
	}
	if _, err := v.Evaluate(ctx, raw, verifier.Expected{ReportData: reportData("old nonce")}); !errors.Is(err, verifier.ErrReportDataMismatch) {
		t.Errorf("wrong nonce: %v", err)
	}
}

// The measurement is IBM's: s390-tools' known answer for all items.
func TestMeasurementKnownAnswer(t *testing.T) {
	fill := func(n int, b byte) []byte {
		out := make([]byte, n)
		for i := range out {
			out[i] = b
		}
		return out
	}
	var tags se.Tags
	copy(tags[:], append(append(append(fill(64, 1), fill(64, 2)...), fill(64, 3)...), fill(16, 4)...))
	got := se.Measurement(fill(64, 0x41), &tags, fill(16, 5), fill(256, 7), fill(16, 8), fill(128, 9))
	want := "88794c62cce7bcf26216deb3f48f13fea6374b6d7e35bcc5c2ce68121db6f45d" +
		"fc8c17185646354940 8bf8e7d1aca11efad0a878af97dc9e21a1fc2a32f3a675"
	if hex.EncodeToString(got) != stripSpaces(want) {
		t.Errorf("measurement %x", got)
	}
}

func stripSpaces(s string) string {
	out := make([]byte, 0, len(s))
	for i := range len(s) {
		if s[i] != ' ' {
			out = append(out, s[i])
		}
	}
	return string(out)
}

// Every byte the measurement covers, and every byte of the measurement
// and of the sealed secrets, is refused when flipped.
func TestTamper(t *testing.T) {
	v, uv, _ := setup(t)
	rd := reportData("n")
	_, r := evidence(t, v, uv, "s", rd)
	fields := map[string]func(*se.Response) []byte{
		"measurement":          func(r *se.Response) []byte { return r.Measurement },
		"additional_data":      func(r *se.Response) []byte { return r.AdditionalData },
		"user_data":            func(r *se.Response) []byte { return r.UserData },
		"cuid":                 func(r *se.Response) []byte { return r.CUID },
		"encr_measurement_key": func(r *se.Response) []byte { return r.EncrMeasurementKey },
		"encr_request_nonce":   func(r *se.Response) []byte { return r.EncrRequestNonce },
		"image_hdr_tags":       func(r *se.Response) []byte { return r.Tags[:] },
	}
	for name, get := range fields {
		for i := range len(get(r)) {
			c := clone(r)
			get(c)[i] ^= 0x01
			if _, err := v.Verify(c, verifier.Expected{ReportData: rd}); err == nil {
				t.Fatalf("%s byte %d flipped: accepted", name, i)
			}
		}
	}
	// Without an expected report data, user data are still measured.
	c := clone(r)
	c.UserData[70%len(c.UserData)] ^= 1
	if _, err := v.Verify(c, verifier.Expected{}); !errors.Is(err, se.ErrMeasurement) {
		t.Errorf("user data changed: %v", err)
	}
}

func clone(r *se.Response) *se.Response {
	cp := func(b []byte) []byte { return append([]byte(nil), b...) }
	return &se.Response{Measurement: cp(r.Measurement), AdditionalData: cp(r.AdditionalData), UserData: cp(r.UserData),
		CUID: cp(r.CUID), EncrMeasurementKey: cp(r.EncrMeasurementKey), EncrRequestNonce: cp(r.EncrRequestNonce), Tags: r.Tags}
}

// Another image, another machine, another verifier's request.
func TestWrongImageMachineVerifier(t *testing.T) {
	v, uv, p, o := setupOpts(t)
	rd := reportData("n")
	other := p.NewUltravisor(t, sesttest.Header())
	_, r := evidence(t, v, other, "s", rd) // same machine, another image
	if _, err := v.Verify(r, verifier.Expected{ReportData: rd}); !errors.Is(err, se.ErrImageTags) {
		t.Errorf("another image: %v", err)
	}
	q := sesttest.New(t)
	foreign := q.NewUltravisor(t, sesttest.Header())
	ch, _ := v.Challenge(ctx, "s")
	if _, err := foreign.Respond(ch, rd); !errors.Is(err, sesttest.ErrNoKeySlot) {
		t.Errorf("a machine without a key slot unpacked the request: %v", err)
	}
	v2, err := se.New(o) // same host keys and image, its own seal key
	if err != nil {
		t.Fatal(err)
	}
	_, r2 := evidence(t, v2, uv, "s", rd)
	if _, err := v.Verify(r2, verifier.Expected{ReportData: rd}); !errors.Is(err, se.ErrNotIssued) {
		t.Errorf("another verifier's request: %v", err)
	}
}

func TestHostKeyDocuments(t *testing.T) {
	p := sesttest.New(t)
	ok := p.Endorsements(t)
	if _, err := se.VerifyHostKeys([]*x509.Certificate{p.HKD.Cert}, ok, p.Now); err != nil {
		t.Fatalf("genuine: %v", err)
	}
	withCRLs := func(crls ...*x509.RevocationList) se.Endorsements {
		e := ok
		e.CRLs = crls
		return e
	}
	q := sesttest.New(t)
	expired := p.IssueValid(t, pkix.Name{CommonName: "old HKD"}, &p.Sign, false, elliptic.P521(), p.Now.Add(-48*time.Hour), p.Now.Add(-24*time.Hour))
	rsaLike := p.Issue(t, pkix.Name{CommonName: "P-384 HKD"}, &p.Sign, false, elliptic.P384())
	noInter := p.Issue(t, sesttest.SigningSubject(), &p.Root, false, elliptic.P384())
	for _, c := range []struct {
		name string
		hkd  *x509.Certificate
		e    se.Endorsements
		at   time.Time
		want error
	}{
		{"HKD of another signing key", q.HKD.Cert, ok, p.Now, se.ErrHostKeyIssuer},
		{"HKD forged in the signing key's name", forged(t, p, q), ok, p.Now, se.ErrHostKeySignature},
		{"expired HKD", expired.Cert, ok, p.Now, se.ErrHostKeyExpired},
		{"HKD not P-521", rsaLike.Cert, ok, p.Now, se.ErrHostKeyType},
		{"revoked HKD", p.HKD.Cert, withCRLs(p.CRL(t, p.Root), p.CRL(t, p.Inter), p.CRL(t, p.Sign, p.HKD.Cert.SerialNumber)), p.Now, se.ErrRevoked},
		{"revoked signing key", p.HKD.Cert, withCRLs(p.CRL(t, p.Root), p.CRL(t, p.Inter, p.Sign.Cert.SerialNumber), p.CRL(t, p.Sign)), p.Now, se.ErrRevoked},
		{"no CRL of the signing key", p.HKD.Cert, withCRLs(p.CRL(t, p.Root), p.CRL(t, p.Inter)), p.Now, se.ErrCRL},
		{"expired CRL", p.HKD.Cert, withCRLs(p.CRL(t, p.Root), p.CRL(t, p.Inter),
			p.CRLValid(t, p.Sign, p.Now.Add(-3*time.Hour), p.Now.Add(-2*time.Hour))), p.Now, se.ErrCRL},
		{"CRL signed by another key", p.HKD.Cert, withCRLs(p.CRL(t, p.Root), p.CRL(t, p.Inter), q.CRL(t, q.Sign)), p.Now, se.ErrCRL},
		{"untrusted root", p.HKD.Cert, se.Endorsements{Certs: ok.Certs, Roots: q.Endorsements(t).Roots, CRLs: ok.CRLs}, p.Now, se.ErrSigningKeyChain},
		{"chain expired", p.HKD.Cert, ok, p.Now.Add(2 * time.Hour), se.ErrSigningKeyChain},
		{"no intermediate", p.Issue(t, pkix.Name{CommonName: "HKD"}, &noInter, false, elliptic.P521()).Cert,
			se.Endorsements{Certs: []*x509.Certificate{noInter.Cert}, Roots: ok.Roots, CRLs: ok.CRLs}, p.Now, se.ErrSigningKeyChain},
		{"no IBM signing key", p.HKD.Cert, se.Endorsements{Certs: []*x509.Certificate{p.Inter.Cert}, Roots: ok.Roots, CRLs: ok.CRLs}, p.Now, se.ErrNoSigningKey},
	} {
		if _, err := se.VerifyHostKeys([]*x509.Certificate{c.hkd}, c.e, c.at); !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
		}
	}
	// Two signing keys: ambiguous.
	two := ok
	two.Certs = append(append([]*x509.Certificate(nil), ok.Certs...), q.Sign.Cert)
	if _, err := se.VerifyHostKeys([]*x509.Certificate{p.HKD.Cert}, two, p.Now); !errors.Is(err, se.ErrNoSigningKey) {
		t.Errorf("two signing keys: %v", err)
	}
}

// forged is a host-key document naming p's signing key (issuer, key id)
// but signed with q's.
func forged(t *testing.T, p, q *sesttest.PKI) *x509.Certificate {
	impostor := *p.Sign.Cert
	impostor.PublicKey = &q.Sign.Key.PublicKey
	return p.Issue(t, pkix.Name{CommonName: "forged"}, &sesttest.Cert{Cert: &impostor, Key: q.Sign.Key}, false, elliptic.P521()).Cert
}
