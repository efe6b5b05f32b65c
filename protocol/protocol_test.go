package protocol_test

import (
	"crypto/sha512"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"strings"
	"testing"

	"github.com/gowebpki/jcs"

	"github.com/cocoon-cc/cocoon/attestation"
	"github.com/cocoon-cc/cocoon/protocol"
)

// Trustee's attestation-service (src/lib.rs, runtime data tests) hashes the
// structured runtime data {"b": 1, "a": "test", "c": {"d": "e"}} as RFC 8785
// JSON with SHA-384 and expects this digest.
const trusteeVector = "e71ce8e70d814ba6639c3612ebee0ff1f76f650f8dbb5e47157e0f3f525cd22c4597480a186427c813ca941da78870c3"

func TestCanonicalJSONTrusteeVector(t *testing.T) {
	// Go map literal and JSON text with the keys in Trustee's order: both
	// must canonicalize the same way.
	var fromText map[string]any
	if err := json.Unmarshal([]byte(`{"b": 1, "a": "test", "c": {"d": "e"}}`), &fromText); err != nil {
		t.Fatal(err)
	}
	for name, v := range map[string]any{
		"map":  map[string]any{"b": 1, "a": "test", "c": map[string]any{"d": "e"}},
		"text": fromText,
	} {
		canon, err := protocol.CanonicalJSON(v)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := string(canon), `{"a":"test","b":1,"c":{"d":"e"}}`; got != want {
			t.Errorf("%s: canonical JSON = %s, want %s", name, got, want)
		}
		sum, err := attestation.Hash("sha384", canon)
		if err != nil {
			t.Fatal(err)
		}
		if got := hex.EncodeToString(sum); got != trusteeVector {
			t.Errorf("%s: attestation.Hash = %s, want %s", name, got, trusteeVector)
		}
		def, _ := attestation.Hash("", canon)
		if hex.EncodeToString(def) != trusteeVector {
			t.Errorf("%s: default hash is not sha384", name)
		}
		rd, err := protocol.ReportData(v.(map[string]any))
		if err != nil {
			t.Fatal(err)
		}
		if got := hex.EncodeToString(rd); got != trusteeVector {
			t.Errorf("%s: ReportData = %s, want %s", name, got, trusteeVector)
		}
	}
}

func TestCanonicalJSONRules(t *testing.T) {
	cases := []struct {
		in   any
		want string
	}{
		// Keys sorted by UTF-16 code units, no whitespace.
		{map[string]any{"z": 1, "Z": 2, "a": []any{3, "x", nil, true}}, `{"Z":2,"a":[3,"x",null,true],"z":1}`},
		// Numbers in ECMAScript form.
		{map[string]any{"n": 1.0, "e": 1e21, "f": 0.5, "neg": math.Copysign(0, -1)}, `{"e":1e+21,"f":0.5,"n":1,"neg":0}`},
		// No HTML escaping; only the mandatory escapes.
		{map[string]any{"s": "<a&b>\u00e9\n\"\\"}, `{"s":"<a&b>é\n\"\\"}`},
		{map[string]any{}, `{}`},
	}
	for _, c := range cases {
		got, err := protocol.CanonicalJSON(c.in)
		if err != nil {
			t.Fatalf("CanonicalJSON(%v): %v", c.in, err)
		}
		if string(got) != c.want {
			t.Errorf("CanonicalJSON(%v) = %s, want %s", c.in, got, c.want)
		}
	}
	if _, err := protocol.CanonicalJSON(map[string]any{"f": func() {}}); err == nil {
		t.Error("CanonicalJSON of a func succeeded")
	}
	if _, err := protocol.ReportData(map[string]any{"c": make(chan int)}); err == nil {
		t.Error("ReportData of a chan succeeded")
	}
}

var (
	ecKey  = protocol.TeePubKey{Kty: "EC", Alg: "ECDH-ES+A256KW", Crv: "P-256", X: "xx", Y: "yy", N: "ignored", E: "ignored"}
	rsaKey = protocol.TeePubKey{Kty: "RSA", Alg: "RSA-OAEP-256", N: "nn", E: "AQAB", Crv: "ignored", X: "ignored"}
)

func TestMembers(t *testing.T) {
	got, _ := json.Marshal(ecKey.Members())
	if want := `{"alg":"ECDH-ES+A256KW","crv":"P-256","kty":"EC","x":"xx","y":"yy"}`; string(got) != want {
		t.Errorf("EC members = %s, want %s", got, want)
	}
	got, _ = json.Marshal(rsaKey.Members())
	if want := `{"alg":"RSA-OAEP-256","e":"AQAB","kty":"RSA","n":"nn"}`; string(got) != want {
		t.Errorf("RSA members = %s, want %s", got, want)
	}
}

func TestRuntimeDataClaimsReportData(t *testing.T) {
	empty := ""
	more := `{"tdx":{}}`
	cases := []struct {
		name       string
		pub        protocol.TeePubKey
		additional *string
		canonical  string
	}{
		{"primary, empty additional", ecKey, &empty,
			`{"additional-evidence":"","nonce":"bm9uY2U=","tee-pubkey":{"alg":"ECDH-ES+A256KW","crv":"P-256","kty":"EC","x":"xx","y":"yy"}}`},
		{"primary, additional", rsaKey, &more,
			`{"additional-evidence":"{\"tdx\":{}}","nonce":"bm9uY2U=","tee-pubkey":{"alg":"RSA-OAEP-256","e":"AQAB","kty":"RSA","n":"nn"}}`},
		{"additional device", ecKey, nil,
			`{"nonce":"bm9uY2U=","tee-pubkey":{"alg":"ECDH-ES+A256KW","crv":"P-256","kty":"EC","x":"xx","y":"yy"}}`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			claims := protocol.RuntimeDataClaims("bm9uY2U=", c.pub, c.additional)
			canon, err := protocol.CanonicalJSON(claims)
			if err != nil {
				t.Fatal(err)
			}
			if string(canon) != c.canonical {
				t.Errorf("canonical = %s\nwant        %s", canon, c.canonical)
			}
			rd, err := protocol.ReportData(claims)
			if err != nil {
				t.Fatal(err)
			}
			want := sha512.Sum384([]byte(c.canonical))
			if hex.EncodeToString(rd) != hex.EncodeToString(want[:]) {
				t.Errorf("ReportData = %x, want %x", rd, want)
			}
			if len(rd) != 48 {
				t.Errorf("ReportData is %d bytes", len(rd))
			}
		})
	}
}

var allTees = []string{"sample", "sampledevice", "snp", "tdx", "sgx", "az-snp-vtpm", "az-tdx-vtpm",
	"tpm", "se", "cca", "csv", "nvidia", "hygondcu"}

func TestParseTee(t *testing.T) {
	for _, s := range allTees {
		tee, err := protocol.ParseTee(s)
		if err != nil || string(tee) != s {
			t.Errorf("ParseTee(%q) = %q, %v", s, tee, err)
		}
	}
	for _, s := range []string{"", "SNP", "Sample", "snp ", " tdx", "azsnpvtpm", "unknown", "sample\x00"} {
		if tee, err := protocol.ParseTee(s); err == nil {
			t.Errorf("ParseTee(%q) = %q, want an error", s, tee)
		}
	}
}

func TestTeeUnmarshal(t *testing.T) {
	var r protocol.Request
	if err := json.Unmarshal([]byte(`{"version":"0.4.0","tee":"tdx","extra-params":{}}`), &r); err != nil {
		t.Fatal(err)
	}
	if r.Tee != protocol.TeeTDX || r.Version != protocol.Version || string(r.ExtraParams) != "{}" {
		t.Errorf("decoded %+v", r)
	}
	for _, body := range []string{`{"version":"0.4.0","tee":"bogus"}`, `{"tee":"SNP"}`, `{"tee":""}`, `{"tee":1}`} {
		var r protocol.Request
		if err := json.Unmarshal([]byte(body), &r); err == nil {
			t.Errorf("%s decoded to %+v, want an error", body, r)
		}
	}
	// A missing tee stays empty (the KBS refuses it itself).
	var missing protocol.Request
	if err := json.Unmarshal([]byte(`{"version":"0.4.0"}`), &missing); err != nil || missing.Tee != "" {
		t.Errorf("missing tee: %+v, %v", missing, err)
	}
}

func TestReportDataSize(t *testing.T) {
	want := map[protocol.Tee]int{protocol.TeeSNP: 64, protocol.TeeTDX: 64, protocol.TeeSGX: 64,
		protocol.TeeAzSNPvTPM: 64, protocol.TeeAzTDXvTPM: 64, protocol.TeeCSV: 64}
	for _, s := range allTees {
		tee := protocol.Tee(s)
		if got := tee.ReportDataSize(); got != want[tee] {
			t.Errorf("%s.ReportDataSize() = %d, want %d", tee, got, want[tee])
		}
	}
}

func TestWireNames(t *testing.T) {
	att := protocol.Attestation{
		InitData:    &protocol.InitData{Format: "toml", Body: "x"},
		RuntimeData: protocol.RuntimeData{Nonce: "n", TeePubKey: protocol.TeePubKey{Kty: "EC", Alg: "a", Crv: "P-256", X: "x", Y: "y"}},
		TeeEvidence: protocol.CompositeEvidence{Primary: json.RawMessage(`{"svn":"1"}`), Additional: ""},
	}
	b, err := json.Marshal(att)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"init-data":{"format":"toml","body":"x"},"runtime-data":{"nonce":"n","tee-pubkey":{"kty":"EC","alg":"a","crv":"P-256","x":"x","y":"y"}},"tee-evidence":{"primary_evidence":{"svn":"1"},"additional_evidence":""}}`
	if string(b) != want {
		t.Errorf("Attestation JSON = %s\nwant %s", b, want)
	}
	att.InitData = nil
	b, _ = json.Marshal(att)
	if strings.Contains(string(b), "init-data") {
		t.Errorf("init-data not omitted: %s", b)
	}
	b, _ = json.Marshal(protocol.Challenge{Nonce: "n", ExtraParams: json.RawMessage(`""`)})
	if string(b) != `{"nonce":"n","extra-params":""}` {
		t.Errorf("Challenge JSON = %s", b)
	}
	b, _ = json.Marshal(protocol.Response{Protected: "p", EncryptedKey: "k", IV: "i", Ciphertext: "c", Tag: "t"})
	if string(b) != `{"protected":"p","encrypted_key":"k","iv":"i","ciphertext":"c","tag":"t"}` {
		t.Errorf("Response JSON = %s", b)
	}
}

var allKinds = []protocol.Kind{protocol.KindAttestation, protocol.KindTokenNotFound, protocol.KindTokenVerifier,
	protocol.KindPolicyDeny, protocol.KindPolicyEngine, protocol.KindParsePolicy, protocol.KindJwe,
	protocol.KindInvalidPath, protocol.KindPluginNotFound, protocol.KindPluginInternal, protocol.KindAdminAuth,
	protocol.KindSerde, protocol.KindRvps, protocol.KindPayloadTooLarge, protocol.KindMethodNotAllowed,
	protocol.KindTooManyRequests, protocol.KindInternal}

// TestErrorStatus: Trustee answers 404 for InvalidRequestPath and
// PluginNotFound and 401 for every other variant; the rest are Cocoon's.
func TestErrorStatus(t *testing.T) {
	want := map[protocol.Kind]int{
		protocol.KindInvalidPath:      http.StatusNotFound,
		protocol.KindPluginNotFound:   http.StatusNotFound,
		protocol.KindPayloadTooLarge:  http.StatusRequestEntityTooLarge,
		protocol.KindMethodNotAllowed: http.StatusMethodNotAllowed,
		protocol.KindTooManyRequests:  http.StatusTooManyRequests,
		protocol.KindInternal:         http.StatusInternalServerError,
	}
	for _, k := range allKinds {
		w, ok := want[k]
		if !ok {
			w = http.StatusUnauthorized
		}
		if got := (&protocol.Error{Kind: k}).Status(); got != w {
			t.Errorf("%s: status %d, want %d", k, got, w)
		}
	}
	// An unknown kind is a 401 too.
	if s := (&protocol.Error{Kind: "Whatever"}).Status(); s != http.StatusUnauthorized {
		t.Errorf("unknown kind: %d", s)
	}
}

func TestResourceNotFound(t *testing.T) {
	e := protocol.ResourceNotFound("default/key/1")
	if e.Kind != protocol.KindPluginInternal || e.Status() != http.StatusUnauthorized {
		t.Errorf("ResourceNotFound = %s, %d", e.Kind, e.Status())
	}
	// As a client reads it back from the wire, wrapped.
	back, _ := protocol.ParseErrorInformation(e.Info())
	if !protocol.IsResourceNotFound(fmt.Errorf("get: %w", back)) {
		t.Errorf("IsResourceNotFound(%v) = false", back)
	}
	for _, err := range []error{
		protocol.Errorf(protocol.KindPluginInternal, "internal error"),
		protocol.Errorf(protocol.KindPolicyDeny, "resource default/key/1 not found"),
		errors.New("resource default/key/1 not found"),
		nil,
	} {
		if protocol.IsResourceNotFound(err) {
			t.Errorf("IsResourceNotFound(%v) = true", err)
		}
	}
}

func TestErrorInfoRoundTrip(t *testing.T) {
	for _, k := range allKinds {
		e := protocol.Errorf(k, "detail %d: %q", 7, "x")
		info := e.Info()
		if info.Type != protocol.ErrorTypePrefix+string(k) {
			t.Errorf("type = %q", info.Type)
		}
		if info.Detail != `detail 7: "x"` {
			t.Errorf("detail = %q", info.Detail)
		}
		b, err := json.Marshal(info)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(string(b), `{"type":"https://github.com/confidential-containers/kbs/errors/`) {
			t.Errorf("wire form %s", b)
		}
		var back protocol.ErrorInformation
		if err := json.Unmarshal(b, &back); err != nil {
			t.Fatal(err)
		}
		parsed, ok := protocol.ParseErrorInformation(back)
		if !ok {
			t.Fatalf("ParseErrorInformation(%+v) failed", back)
		}
		if parsed.Kind != k || parsed.Detail != e.Detail || parsed.Status() != e.Status() {
			t.Errorf("round trip: %+v, want %+v", parsed, e)
		}
		if parsed.Error() != string(k)+": "+e.Detail {
			t.Errorf("Error() = %q", parsed.Error())
		}
	}
	for _, info := range []protocol.ErrorInformation{
		{},
		{Type: protocol.ErrorTypePrefix},
		{Type: "https://example.com/errors/PolicyDeny"},
		{Type: "about:blank", Detail: "x"},
		{Type: "https://github.com/confidential-containers/kbs/error/PolicyDeny"},
	} {
		if e, ok := protocol.ParseErrorInformation(info); ok {
			t.Errorf("ParseErrorInformation(%+v) = %+v, want not ok", info, e)
		}
	}
}

func TestErrorfWraps(t *testing.T) {
	e := protocol.Errorf(protocol.KindSerde, "read: %w", io.ErrUnexpectedEOF)
	if !errors.Is(e, io.ErrUnexpectedEOF) {
		t.Error("Errorf with %w does not wrap its cause")
	}
	if e.Detail != "read: unexpected EOF" {
		t.Errorf("detail %q", e.Detail)
	}
	var target *protocol.Error
	if !errors.As(error(e), &target) || target.Kind != protocol.KindSerde {
		t.Error("errors.As failed")
	}
	if plain := protocol.Errorf(protocol.KindSerde, "no cause"); plain.Unwrap() != nil {
		t.Errorf("Unwrap = %v, want nil", plain.Unwrap())
	}
}

// FuzzCanonicalJSON: runtime data (objects of strings) canonicalizes as
// encoding/json followed by the jcs library does.
func FuzzCanonicalJSON(f *testing.F) {
	f.Add("nonce", "n0nce", "x", "<a&b>\u00e9\n\"\\\u2028\x7f\x01", "additional-evidence")
	f.Add("é", "\xff", "Z", "", "a")
	f.Add("\U0001F600", "\uE000", "\t", "\u00ff", "\x00")
	f.Fuzz(func(t *testing.T, k1, v1, k2, v2, k3 string) {
		v := map[string]any{k1: v1, k3: map[string]any{k2: v2, k1: v1}, "tee-pubkey": map[string]any{"kty": v2}}
		got, err := protocol.CanonicalJSON(v)
		b, _ := json.Marshal(v)
		want, werr := jcs.Transform(b)
		if (err == nil) != (werr == nil) {
			t.Fatalf("CanonicalJSON(%q): %v, jcs: %v", v, err, werr)
		}
		if string(got) != string(want) {
			t.Errorf("CanonicalJSON(%q) =\n%q\nwant\n%q", v, got, want)
		}
	})
}
