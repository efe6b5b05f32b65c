package aa

import (
	"bytes"
	"context"
	"crypto"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	vtdx "github.com/cocoon-cc/cocoon/attestation/verifier/tdx"
	"github.com/cocoon-cc/cocoon/guest/attester/sample"
	"github.com/cocoon-cc/cocoon/protocol"
	aapb "github.com/cocoon-cc/cocoon/protocol/ttrpc/aa"
)

// upstreamExample is guest-components' config.example.toml (cert elided).
const upstreamExample = `
[token_configs]
[token_configs.coco_as]
url = "http://127.0.0.1:8000"

[token_configs.kbs]
url = "https://127.0.0.1:8080"
tee_key_algorithm = "ECDH-ES+A256KW-P256"
cert = '''
-----BEGIN CERTIFICATE-----
-----END CERTIFICATE-----
'''

[eventlog_config]
init_pcr = 17
enable_eventlog = false

[log]
level = "info"
`

func TestParseConfigUpstreamExample(t *testing.T) {
	c, err := ParseConfig([]byte(upstreamExample))
	if err != nil {
		t.Fatal(err)
	}
	k := c.TokenConfigs.KBS
	if k == nil || k.URL != "https://127.0.0.1:8080" || k.TeeKeyAlgorithm != KeyP256 ||
		!bytes.Contains([]byte(k.Cert), []byte("BEGIN CERTIFICATE")) {
		t.Fatalf("kbs config %+v", k)
	}
	if c.TokenConfigs.CoCoAS == nil || c.TokenConfigs.CoCoAS.URL != "http://127.0.0.1:8000" {
		t.Fatalf("coco_as config %+v", c.TokenConfigs.CoCoAS)
	}
	if c.EventlogConfig != (EventlogConfig{InitPCR: 17}) || c.Log.Level != "info" {
		t.Fatalf("eventlog %+v log %+v", c.EventlogConfig, c.Log)
	}
}

func TestParseConfigDefaultsAndErrors(t *testing.T) {
	c, err := ParseConfig([]byte("[eventlog_config]\nenable_eventlog = true\n"))
	if err != nil || c.EventlogConfig.InitPCR != DefaultInitPCR || !c.EventlogConfig.EnableEventlog {
		t.Fatalf("defaults: %+v %v", c, err)
	}
	for _, bad := range []string{
		"[token_configs.kbs]\nurl = \"ftp://kbs\"\n",
		"[token_configs.kbs]\nurl = \"http://kbs\"\ntee_key_algorithm = \"RSA1_5\"\n",
		"[token_configs.kbs]\nurl = \"http://kbs\"\nfallback_urls = [\"kbs2\"]\n",
		"[token_configs.coco_as]\nurl = \"\"\n",
		"[eventlog_config]\ninit_pcr = -1\n",
		"not toml",
	} {
		if _, err := ParseConfig([]byte(bad)); !errors.Is(err, ErrConfig) {
			t.Errorf("%q: %v, want ErrConfig", bad, err)
		}
	}
}

func TestKbcParamsFromCmdline(t *testing.T) {
	for _, c := range []struct {
		cmdline string
		want    KbcParams
		ok      bool
		err     bool
	}{
		{"console=ttyS0 agent.aa_kbc_params=cc_kbc::http://10.0.0.1:8080 quiet", KbcParams{"cc_kbc", "http://10.0.0.1:8080"}, true, false},
		{"agent.aa_kbc_params=offline_fs_kbc::null\n", KbcParams{"offline_fs_kbc", "null"}, true, false},
		{"console=ttyS0", KbcParams{}, false, false},
		{"agent.aa_kbc_params=cc_kbc", KbcParams{}, false, true},
		{"agent.aa_kbc_params=::http://x", KbcParams{}, false, true},
		{"agent.aa_kbc_params=a::b::c", KbcParams{}, false, true},
	} {
		got, ok, err := KbcParamsFromCmdline(c.cmdline)
		if got != c.want || ok != c.ok || (err != nil) != c.err {
			t.Errorf("%q = %+v %v %v", c.cmdline, got, ok, err)
		}
	}
}

func TestApplyCmdline(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cmdline")
	os.WriteFile(path, []byte("agent.aa_kbc_params=cc_kbc::http://127.0.0.1:8080\n"), 0o600)
	c := DefaultConfig()
	if err := c.ApplyCmdline(path); err != nil || c.TokenConfigs.KBS == nil || c.TokenConfigs.KBS.URL != "http://127.0.0.1:8080" {
		t.Fatalf("cmdline KBS: %+v %v", c.TokenConfigs.KBS, err)
	}
	// aa.toml wins over the command line.
	c = DefaultConfig()
	c.TokenConfigs.KBS = &KBSConfig{URL: "https://kbs"}
	if err := c.ApplyCmdline(path); err != nil || c.TokenConfigs.KBS.URL != "https://kbs" {
		t.Fatalf("aa.toml overridden: %+v %v", c.TokenConfigs.KBS, err)
	}
	os.WriteFile(path, []byte("agent.aa_kbc_params=offline_fs_kbc::null\n"), 0o600)
	c = DefaultConfig()
	if err := c.ApplyCmdline(path); !errors.Is(err, ErrConfig) || c.TokenConfigs.KBS != nil {
		t.Fatalf("non-cc_kbc: %v", err)
	}
}

// TestEventRecord checks an AAEL record byte for byte, its digest against
// guest-components' test vector, and that the crypto-agile parser reads it.
func TestEventRecord(t *testing.T) {
	e := Event{Domain: "domain", Operation: "operation", Content: "content"}
	for h, want := range map[crypto.Hash]string{
		crypto.SHA256: "46df8dacf00a07d34a83cdf56d7978697790787cf2ba1432ef7c38f22cd96351",
		crypto.SHA384: "dad5f0e226318ffa9839b75a472c6aa7fdb5834949d0a0a22990cf04d5692440fb00f3aa0609db7e49cd8d793f670d02",
		crypto.SHA512: "b708d222ca8bd44dfe6ba0c4ca2cbb72379276fba8091025217064be45a813e5d6124ccf073219edb617d1faf007d55061465bdf34b7437dbdc9a7405bd4e9c0",
	} {
		r, err := EncodeRecord(e, 4, h)
		if err != nil {
			t.Fatal(err)
		}
		if hex.EncodeToString(r.Digest) != want {
			t.Errorf("%v digest %x, want upstream's %s", h, r.Digest, want)
		}
	}
	r, _ := EncodeRecord(e, 4, crypto.SHA384)
	data := r.Bytes[len(r.Bytes)-(8+len(e.String())):]
	if !bytes.HasPrefix(data, []byte("LEAA")) || binary.LittleEndian.Uint32(data[4:]) != uint32(len(e.String())) {
		t.Fatalf("tagged event %q", data)
	}
	log, err := vtdx.ParseEventLog(append(specID(), r.Bytes...))
	if err != nil {
		t.Fatal(err)
	}
	ev := log.Events[0]
	if ev.Index != 4 || ev.Type != evEventTag || !ev.DigestMatchesEvent || !bytes.Equal(ev.Digests[0].Value, r.Digest) {
		t.Fatalf("parsed %+v", ev)
	}
	if fmt.Sprint(ev.Details) == "map[]" {
		t.Fatalf("no AAEL details: %+v", ev.Details)
	}
}

func TestEventValidate(t *testing.T) {
	for _, e := range []Event{{"", "o", "c"}, {"d", "", "c"}, {"d d", "o", "c"}, {"d", "o o", "c"},
		{"d", "o", "c\nd"}, {"d", "o", "c\x00"}, {"d", "o", string(make([]byte, maxEventSize))}} {
		if err := e.Validate(); !errors.Is(err, ErrInvalidEvent) {
			t.Errorf("%q accepted", e)
		}
	}
	if err := (Event{"d", "o", "content with spaces"}).Validate(); err != nil {
		t.Fatal(err)
	}
}

// specID is a Spec ID event declaring SHA-384 digests.
func specID() []byte {
	body := append([]byte("Spec ID Event03\x00"), 0, 0, 0, 0, 0, 2, 0, 2, 1, 0, 0, 0, 0xc, 0, 48, 0, 0)
	h := binary.LittleEndian.AppendUint32(nil, 0)
	h = binary.LittleEndian.AppendUint32(h, 3)
	h = append(h, make([]byte, 20)...)
	h = binary.LittleEndian.AppendUint32(h, uint32(len(body)))
	return append(h, body...)
}

func jwt(iat, exp int64) string {
	seg := func(v any) string { b, _ := json.Marshal(v); return base64.RawURLEncoding.EncodeToString(b) }
	return seg(map[string]string{"alg": "ES256"}) + "." + seg(map[string]int64{"iat": iat, "exp": exp}) + ".sig"
}

// fakeKBS is a KBS double answering RCAR with tokens valid for life, so the
// cache's refresh can be tested with an injected clock; the real KBS is
// driven in test/e2e.
func fakeKBS(t *testing.T, now func() time.Time, life time.Duration) (*httptest.Server, *atomic.Int32) {
	var n atomic.Int32
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/kbs/v0/auth":
			http.SetCookie(w, &http.Cookie{Name: "kbs-session-id", Value: "s"})
			json.NewEncoder(w).Encode(protocol.Challenge{Nonce: "bm9uY2U="})
		case "/kbs/v0/attest":
			n.Add(1)
			json.NewEncoder(w).Encode(protocol.AttestationToken{Token: jwt(now().Unix(), now().Add(life).Unix())})
		}
	}))
	t.Cleanup(s.Close)
	return s, &n
}

func TestTokenCacheRefreshesBeforeExpiry(t *testing.T) {
	clock := time.Unix(1_700_000_000, 0)
	now := func() time.Time { return clock }
	kbs, attests := fakeKBS(t, now, 5*time.Minute)
	a, err := New(Options{Config: Config{TokenConfigs: TokenConfigs{KBS: &KBSConfig{URL: kbs.URL}}}, Attester: sample.Attester{}, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	first, err := a.Token(ctx, "kbs")
	if err != nil {
		t.Fatal(err)
	}
	clock = clock.Add(4 * time.Minute)
	if again, _ := a.Token(ctx, "kbs"); !bytes.Equal(again, first) || attests.Load() != 1 {
		t.Fatalf("token not cached: %d attestations", attests.Load())
	}
	// Within the last minute (a tenth of the lifetime, capped) it renews.
	clock = clock.Add(30*time.Second + time.Second)
	if again, _ := a.Token(ctx, "kbs"); bytes.Equal(again, first) || attests.Load() != 2 {
		t.Fatalf("token not refreshed before exp: %d attestations", attests.Load())
	}
}

func TestTokenRetriesThenUnavailable(t *testing.T) {
	var hits atomic.Int32
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		hits.Add(1)
		w.WriteHeader(http.StatusInternalServerError)
		json.NewEncoder(w).Encode(protocol.ErrorInformation{Type: protocol.ErrorTypePrefix + "InternalError", Detail: "down"})
	}))
	defer s.Close()
	a, _ := New(Options{Config: Config{TokenConfigs: TokenConfigs{KBS: &KBSConfig{URL: s.URL}}},
		Attester: sample.Attester{}, Retry: Retry{Attempts: 3, Backoff: time.Millisecond}})
	_, err := a.Token(context.Background(), "kbs")
	if !errors.Is(err, ErrUnreachable) || Code(err) != codes.Unavailable || hits.Load() != 3 {
		t.Fatalf("err %v (code %v) after %d attempts", err, Code(err), hits.Load())
	}
}

func TestTokenRefusalIsNotRetried(t *testing.T) {
	var hits atomic.Int32
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		hits.Add(1)
		w.WriteHeader(http.StatusUnauthorized)
		json.NewEncoder(w).Encode(protocol.ErrorInformation{Type: protocol.ErrorTypePrefix + "AttestationError", Detail: "no"})
	}))
	defer s.Close()
	a, _ := New(Options{Config: Config{TokenConfigs: TokenConfigs{KBS: &KBSConfig{URL: s.URL}}}, Attester: sample.Attester{}})
	_, err := a.Token(context.Background(), "kbs")
	if !errors.Is(err, ErrRefused) || Code(err) != codes.PermissionDenied || hits.Load() != 1 {
		t.Fatalf("err %v after %d attempts", err, hits.Load())
	}
}

func TestTokenFallbackKBS(t *testing.T) {
	now := time.Now
	kbs, attests := fakeKBS(t, now, time.Hour)
	down := httptest.NewServer(http.NotFoundHandler())
	down.Close()
	a, _ := New(Options{Config: Config{TokenConfigs: TokenConfigs{KBS: &KBSConfig{URL: down.URL, FallbackURLs: []string{kbs.URL}}}},
		Attester: sample.Attester{}, Retry: Retry{Attempts: 1}})
	if _, err := a.Token(context.Background(), "kbs"); err != nil || attests.Load() != 1 {
		t.Fatalf("fallback: %v", err)
	}
}

func TestExtendNotEnabled(t *testing.T) {
	a, _ := New(Options{Attester: sample.Attester{}})
	res, err := a.ExtendRuntimeMeasurement(context.Background(), Event{"d", "o", "c"}, nil)
	if err != nil || res != aapb.RuntimeMeasurementResult_NOT_ENABLED {
		t.Fatalf("%v %v", res, err)
	}
}

func FuzzParseConfig(f *testing.F) {
	f.Add([]byte(upstreamExample))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := ParseConfig(b)
		if err == nil && c.TokenConfigs.KBS != nil {
			if _, _, err := newTEEKey(c.TokenConfigs.KBS.TeeKeyAlgorithm); err != nil && c.TokenConfigs.KBS.TeeKeyAlgorithm != KeyRSA {
				t.Fatalf("validated key algorithm %q unusable: %v", c.TokenConfigs.KBS.TeeKeyAlgorithm, err)
			}
		}
	})
}

func FuzzKbcParamsFromCmdline(f *testing.F) {
	f.Add("console=ttyS0 agent.aa_kbc_params=cc_kbc::http://10.0.0.1:8080")
	f.Fuzz(func(t *testing.T, s string) {
		p, ok, err := KbcParamsFromCmdline(s)
		if ok && (err != nil || p.KBC == "") {
			t.Fatalf("%q: %+v %v", s, p, err)
		}
	})
}

func FuzzEncodeRecord(f *testing.F) {
	f.Add("domain", "operation", "content")
	f.Fuzz(func(t *testing.T, d, o, c string) {
		r, err := EncodeRecord(Event{d, o, c}, 3, crypto.SHA384)
		if err != nil {
			return
		}
		log, err := vtdx.ParseEventLog(append(specID(), r.Bytes...))
		if err != nil || len(log.Events) != 1 || string(log.Events[0].Data[8:]) != d+" "+o+" "+c {
			t.Fatalf("record of %q %q %q does not parse back: %v", d, o, c, err)
		}
	})
}
