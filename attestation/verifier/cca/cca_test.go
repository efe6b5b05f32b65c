package cca

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"sort"
	"testing"

	"github.com/fxamacker/cbor/v2"
	"github.com/veraison/go-cose"

	"github.com/cocoon-cc/cocoon/attestation/verifier"
	"github.com/cocoon-cc/cocoon/attestation/verifier/cca/ccatest"
)

// TestExampleTokenClaims verifies Trustee's example token with the stores
// it ships and compares the claims with what Trustee's verifier derives:
// the shape of its claims sample (cca-claims.json, made from another
// token) and the values its stores and README give for this one.
func TestExampleTokenClaims(t *testing.T) {
	tok, err := ParseToken(exampleToken(t))
	if err != nil {
		t.Fatal(err)
	}
	claims, err := fixtureVerifier(t).VerifyToken(exampleToken(t), verifier.Expected{ReportData: tok.Realm.Challenge})
	if err != nil {
		t.Fatal(err)
	}
	got := roundTrip(t, claims)

	var want map[string]any
	if err := json.Unmarshal(fixture(t, "deps/verifier/test_data/cca-claims.json"), &want); err != nil {
		t.Fatal(err)
	}
	for _, part := range []string{"", "platform", "realm"} {
		g, w := got, want
		if part != "" {
			g, w = got[part].(map[string]any), want[part].(map[string]any)
		}
		if !reflect.DeepEqual(keys(g), keys(w)) {
			t.Errorf("%q keys %v, Trustee's %v", part, keys(g), keys(w))
		}
		for k, v := range w {
			if reflect.TypeOf(g[k]) != reflect.TypeOf(v) {
				t.Errorf("%s.%s is %T, Trustee's %T", part, k, g[k], v)
			}
		}
	}

	// Values: Trustee's README names the realm initial measurement to
	// register, the trust anchor store the platform, report_data and
	// init_data are the hex of the challenge and personalization value.
	realm, platform := got["realm"].(map[string]any), got["platform"].(map[string]any)
	const rim = "rof79/EF5xp4J8tvCJaInHPSvq9IMNT5ywXj6Ww/x7T6oEyvNqJr0JTPnHtzhhfkwYmq7hhN7dpdegPDnb2sfA=="
	check := map[string][2]any{
		"rim":          {realm["cca-realm-initial-measurement"], rim},
		"instance":     {platform["cca-platform-instance-id"], hexToB64(t, "0107060504030201000f0e0d0c0b0a090817161514131211101f1e1d1c1b1a1918")},
		"impl":         {platform["cca-platform-implementation-id"], hexToB64(t, "7f454c4602010100000000000000000003003e00010000005058000000000000")},
		"report_data":  {got["report_data"], hex.EncodeToString(tok.Realm.Challenge)},
		"init_data":    {got["init_data"], hex.EncodeToString(make([]byte, 64))},
		"lifecycle":    {platform["cca-platform-lifecycle"], float64(0x3003)},
		"config":       {platform["cca-platform-config"], hexToB64(t, "cfcfcfcf")},
		"rak-hash-alg": {realm["cca-realm-public-key-hash-algo-id"], "sha-256"},
	}
	for name, c := range check {
		if c[0] != c[1] {
			t.Errorf("%s = %v, want %v", name, c[0], c[1])
		}
	}
	rv, err := ParseReferenceValues(fixture(t, ccaData+"/conf/rvstore.json"))
	if err != nil {
		t.Fatal(err)
	}
	sw := platform["cca-platform-sw-components"].([]any)
	ref := rv.Platforms[string(tok.Platform.ImplementationID)][0].SwComponents
	if len(sw) != len(ref) {
		t.Fatalf("%d sw-components, %d in the store", len(sw), len(ref))
	}
	for i, c := range sw {
		m := c.(map[string]any)
		if m["measurement-value"] != base64.StdEncoding.EncodeToString(ref[i].Value) || m["measurement-type"] != *ref[i].Type {
			t.Errorf("sw-component %d = %v, store has %s %x", i, m, *ref[i].Type, ref[i].Value)
		}
	}
}

func roundTrip(t *testing.T, v any) map[string]any {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func keys(m map[string]any) []string {
	k := make([]string, 0, len(m))
	for n := range m {
		k = append(k, n)
	}
	sort.Strings(k)
	return k
}

func hexToB64(t *testing.T, h string) string {
	b, err := hex.DecodeString(h)
	if err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(b)
}

// TestLiveChallenge takes the path a live handshake takes: a realm token
// for a fresh report data and an initdata digest.
func TestLiveChallenge(t *testing.T) {
	iss := issuer(t)
	initdata := sha256.Sum256([]byte("version = \"0.1.0\"\n"))
	iss.Perso = verifier.Fit(initdata[:], 64)
	rd := make([]byte, sha512.Size384)
	rand.Read(rd)
	ev := ccatest.Evidence(mustToken(t, iss, verifier.Fit(rd, 64)))
	v := fixtureVerifier(t)
	tcs, err := v.Evaluate(context.Background(), ev, verifier.Expected{ReportData: rd, InitDataDigest: initdata[:]})
	if err != nil {
		t.Fatal(err)
	}
	if len(tcs) != 1 || tcs[0].Class != "cpu" || tcs[0].Claims["report_data"] != hex.EncodeToString(verifier.Fit(rd, 64)) {
		t.Fatalf("claims %+v", tcs)
	}
	other := bytes.Clone(rd)
	other[0] ^= 1
	if _, err := v.Evaluate(context.Background(), ev, verifier.Expected{ReportData: other}); !errors.Is(err, verifier.ErrReportDataMismatch) {
		t.Errorf("another nonce: %v, want ErrReportDataMismatch", err)
	}
	if _, err := v.Evaluate(context.Background(), ev, verifier.Expected{ReportData: rd, InitDataDigest: other}); !errors.Is(err, verifier.ErrInitDataMismatch) {
		t.Errorf("another initdata: %v, want ErrInitDataMismatch", err)
	}
}

// TestRefusals: each check refuses with its own error.
func TestRefusals(t *testing.T) {
	rd := bytes.Repeat([]byte{7}, 48)
	otherKey, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	for _, c := range []struct {
		name  string
		setup func(o *Options, i *ccatest.Issuer)
		want  error
	}{
		{"no trust anchors", func(o *Options, _ *ccatest.Issuer) { o.TrustAnchors = nil }, ErrNoTrustAnchors},
		{"unknown platform", func(o *Options, _ *ccatest.Issuer) {
			o.TrustAnchors = TrustAnchors{"another": CPAK{}}
		}, ErrUnknownPlatform},
		{"revoked CPAK", func(o *Options, _ *ccatest.Issuer) {
			o.TrustAnchors = editCPAK(o.TrustAnchors, func(c *CPAK) { c.Denied = "revoked" })
		}, ErrRevokedCPAK},
		{"CPAK of another implementation", func(o *Options, _ *ccatest.Issuer) {
			o.TrustAnchors = editCPAK(o.TrustAnchors, func(c *CPAK) { c.ImplementationID = make([]byte, 32) })
		}, ErrImplementationMismatch},
		{"swapped CPAK", func(o *Options, _ *ccatest.Issuer) {
			o.TrustAnchors = editCPAK(o.TrustAnchors, func(c *CPAK) { c.Key = &otherKey.PublicKey })
		}, ErrPlatformSignature},
		{"CPAK on another curve", func(o *Options, _ *ccatest.Issuer) {
			k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			o.TrustAnchors = editCPAK(o.TrustAnchors, func(c *CPAK) { c.Key = &k.PublicKey })
		}, ErrPlatformSignature},
		{"realm not signed by its RAK", func(_ *Options, i *ccatest.Issuer) { i.RAK = otherKey }, ErrRealmSignature},
		{"RAK the platform did not vouch for", func(_ *Options, i *ccatest.Issuer) {
			i.RAK = otherKey
			i.Realm[ccatest.LabelRAK], _ = cbor.Marshal(uncompressed(otherKey))
		}, ErrRAKBinding},
		{"no reference values", func(o *Options, _ *ccatest.Issuer) { o.ReferenceValues = nil }, ErrNoPlatformReference},
		{"implementation without reference", func(o *Options, _ *ccatest.Issuer) {
			o.ReferenceValues = &ReferenceValues{Realms: o.ReferenceValues.Realms}
		}, ErrNoPlatformReference},
		{"firmware not a reference", func(o *Options, _ *ccatest.Issuer) {
			editPlatformRef(o, func(p *PlatformReference) { p.SwComponents[3].Value = make([]byte, 32) })
		}, ErrPlatformReference},
		{"firmware version not the reference's", func(o *Options, _ *ccatest.Issuer) {
			v := "9.9"
			editPlatformRef(o, func(p *PlatformReference) { p.SwComponents[0].Version = &v })
		}, ErrPlatformReference},
		{"platform state denied", func(o *Options, _ *ccatest.Issuer) {
			o.ReferenceValues.Platforms = maps.Clone(o.ReferenceValues.Platforms)
			for k, refs := range o.ReferenceValues.Platforms {
				denied := refs[0]
				denied.Denied = "insecure"
				o.ReferenceValues.Platforms[k] = append(slices.Clone(refs), denied)
			}
		}, ErrDeniedPlatform},
		{"firmware missing", func(o *Options, _ *ccatest.Issuer) {
			editPlatformRef(o, func(p *PlatformReference) { p.SwComponents = p.SwComponents[1:] })
		}, ErrPlatformReference},
		{"platform config not a reference", func(o *Options, _ *ccatest.Issuer) {
			editPlatformRef(o, func(p *PlatformReference) { p.Config = []byte{1, 2, 3, 4} })
		}, ErrPlatformReference},
		{"realm not a reference", func(o *Options, _ *ccatest.Issuer) {
			o.ReferenceValues.Realms = []RealmReference{{InitialMeasurement: make([]byte, 64)}}
		}, ErrRealmReference},
		{"realm extended past its reference", func(_ *Options, i *ccatest.Issuer) {
			rem := [][]byte{make([]byte, 64), make([]byte, 64), bytes.Repeat([]byte{1}, 64), make([]byte, 64)}
			i.Realm[44239], _ = cbor.Marshal(rem)
		}, ErrRealmReference},
		{"another challenge", func(_ *Options, i *ccatest.Issuer) {}, verifier.ErrReportDataMismatch},
	} {
		t.Run(c.name, func(t *testing.T) {
			o := fixtureVerifier(t).opts
			i := issuer(t)
			c.setup(&o, i)
			challenge := verifier.Fit(rd, 64)
			if c.want == verifier.ErrReportDataMismatch {
				challenge[0] ^= 1
			}
			_, err := New(o).VerifyToken(mustToken(t, i, challenge), verifier.Expected{ReportData: rd})
			if !errors.Is(err, c.want) {
				t.Fatalf("%v, want %v", err, c.want)
			}
		})
	}
}

func editCPAK(ta TrustAnchors, f func(*CPAK)) TrustAnchors {
	out := TrustAnchors{}
	for k, c := range ta {
		f(&c)
		out[k] = c
	}
	return out
}

func editPlatformRef(o *Options, f func(*PlatformReference)) {
	rv := &ReferenceValues{Platforms: map[string][]PlatformReference{}, Realms: o.ReferenceValues.Realms}
	for k, refs := range o.ReferenceValues.Platforms {
		for _, r := range refs {
			r.SwComponents = slices.Clone(r.SwComponents)
			f(&r)
			rv.Platforms[k] = append(rv.Platforms[k], r)
		}
	}
	o.ReferenceValues = rv
}

func uncompressed(k *ecdsa.PrivateKey) []byte {
	b, err := k.PublicKey.Bytes()
	if err != nil {
		panic(err)
	}
	return b
}

// TestEveryByteFlipped: no byte of the token can change and still verify.
func TestEveryByteFlipped(t *testing.T) {
	tok := exampleToken(t)
	v := fixtureVerifier(t)
	p, _ := ParseToken(tok)
	want := verifier.Expected{ReportData: p.Realm.Challenge}
	classes := map[string]int{}
	for i := range tok {
		for _, mask := range []byte{0x01} {
			b := bytes.Clone(tok)
			b[i] ^= mask
			_, err := v.VerifyToken(b, want)
			if err == nil {
				t.Fatalf("byte %d ^ %#x: verified", i, mask)
			}
			classes[errClass(err)]++
		}
	}
	t.Logf("refusals by class: %v", classes)
}

func errClass(err error) string {
	for _, e := range []error{verifier.ErrMalformedEvidence, verifier.ErrSignature, verifier.ErrEndorsement,
		verifier.ErrUnexpectedTeeConfig, verifier.ErrReportDataMismatch} {
		if errors.Is(err, e) {
			return e.Error()
		}
	}
	return fmt.Sprintf("untyped: %v", err)
}

func TestEvidenceForms(t *testing.T) {
	tok := exampleToken(t)
	p, _ := ParseToken(tok)
	v := fixtureVerifier(t)
	want := verifier.Expected{ReportData: p.Realm.Challenge}
	b64, _ := json.Marshal(map[string][]byte{"token": tok})
	for name, ev := range map[string][]byte{"serde byte array": ccatest.Evidence(tok), "base64": b64} {
		if _, err := v.Evaluate(context.Background(), ev, want); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	for name, ev := range map[string]string{
		"empty":          `{}`,
		"empty token":    `{"token":[]}`,
		"byte over 255":  `{"token":[256]}`,
		"unknown member": `{"token":[1],"quote":"x"}`,
		"snp evidence":   `{"attestation_report":{},"cert_chain":[]}`,
		"not JSON":       `token`,
	} {
		if _, err := v.Evaluate(context.Background(), json.RawMessage(ev), want); !errors.Is(err, verifier.ErrMalformedEvidence) {
			t.Errorf("%s: %v, want ErrMalformedEvidence", name, err)
		}
	}
}

// TestCachedPlatform: a platform token verified once is not verified
// again, but every realm token is, with its binding to the platform.
func TestCachedPlatform(t *testing.T) {
	v := fixtureVerifier(t)
	rd := make([]byte, 48)
	i := issuer(t)
	if _, err := v.VerifyToken(mustToken(t, i, verifier.Fit(rd, 64)), verifier.Expected{ReportData: rd}); err != nil {
		t.Fatal(err)
	}
	otherKey, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	i.RAK = otherKey
	if _, err := v.VerifyToken(mustToken(t, i, verifier.Fit(rd, 64)), verifier.Expected{ReportData: rd}); !errors.Is(err, ErrRealmSignature) {
		t.Errorf("realm signed by another key: %v", err)
	}
	i.Realm[ccatest.LabelRAK], _ = cbor.Marshal(uncompressed(otherKey))
	if _, err := v.VerifyToken(mustToken(t, i, verifier.Fit(rd, 64)), verifier.Expected{ReportData: rd}); !errors.Is(err, ErrRAKBinding) {
		t.Errorf("RAK not the platform's: %v", err)
	}
}

// TestStoreDenials: entries with an "x-reason" (the store's deny form) are
// read as denials.
func TestStoreDenials(t *testing.T) {
	withReason := func(b []byte, list string) []byte {
		var doc any
		json.Unmarshal(b, &doc)
		entries := doc
		if list != "" {
			entries = doc.(map[string]any)[list]
		}
		for _, e := range entries.([]any) {
			e.(map[string]any)["x-reason"] = "revoked"
		}
		out, _ := json.Marshal(doc)
		return out
	}
	ta, err := ParseTrustAnchors(withReason(fixture(t, ccaData+"/conf/tastore.json"), ""))
	if err != nil {
		t.Fatal(err)
	}
	rv, err := ParseReferenceValues(withReason(fixture(t, ccaData+"/conf/rvstore.json"), "platform"))
	if err != nil {
		t.Fatal(err)
	}
	good := fixtureVerifier(t).opts
	tok := exampleToken(t)
	for name, c := range map[string]struct {
		o    Options
		want error
	}{
		"CPAK":           {Options{TrustAnchors: ta, ReferenceValues: good.ReferenceValues}, ErrRevokedCPAK},
		"platform state": {Options{TrustAnchors: good.TrustAnchors, ReferenceValues: rv}, ErrDeniedPlatform},
	} {
		if _, err := New(c.o).VerifyToken(tok, verifier.Expected{}); !errors.Is(err, c.want) {
			t.Errorf("%s denied: %v, want %v", name, err, c.want)
		}
	}
}

// TestRealmProfileCOSEKey: under the 2023 realm profile the RAK is a
// COSE_Key, and the platform vouches for the hash of that encoding. The
// example's platform token is signed again with the fixture's CPAK for it.
func TestRealmProfileCOSEKey(t *testing.T) {
	i := issuer(t)
	key, err := cose.NewKeyFromPublic(&i.RAK.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	rak, err := key.MarshalCBOR()
	if err != nil {
		t.Fatal(err)
	}
	i.Realm[ccatest.LabelRAK], _ = cbor.Marshal(rak)
	i.Realm[265], _ = cbor.Marshal(RealmProfile)
	cpak, err := ccatest.LoadKey(fixturePath(t, ccaData+"/misc/cpak-priv.json"))
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(rak)
	if err := i.ResignPlatform(cpak, sum[:]); err != nil {
		t.Fatal(err)
	}
	rd := make([]byte, 48)
	if _, err := fixtureVerifier(t).VerifyToken(mustToken(t, i, verifier.Fit(rd, 64)), verifier.Expected{ReportData: rd}); err != nil {
		t.Fatal(err)
	}
	// The same key as a raw point is another claim: the binding fails.
	i.Realm[ccatest.LabelRAK], _ = cbor.Marshal(uncompressed(i.RAK))
	if _, err := fixtureVerifier(t).VerifyToken(mustToken(t, i, verifier.Fit(rd, 64)), verifier.Expected{ReportData: rd}); !errors.Is(err, verifier.ErrMalformedEvidence) {
		t.Errorf("raw RAK under the realm profile: %v, want malformed", err)
	}
}
