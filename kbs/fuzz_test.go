package kbs

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path"
	"strings"
	"sync"
	"testing"

	"github.com/cocoon-cc/cocoon/jose"
	"github.com/cocoon-cc/cocoon/kbs/respolicy"
	"github.com/cocoon-cc/cocoon/protocol"
)

// serve runs one request through the handler in process.
func serve(srv *Server, method, target string, body []byte, sessionID string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, target, bytes.NewReader(body))
	if sessionID != "" {
		req.AddCookie(&http.Cookie{Name: protocol.SessionCookie, Value: sessionID})
	}
	rec := httptest.NewRecorder()
	srv.Handler().ServeHTTP(rec, req)
	return rec
}

var (
	teeKeyOnce sync.Once
	teeKey     *jose.TEEKey
)

func testTEEKey(t testing.TB) *jose.TEEKey {
	teeKeyOnce.Do(func() {
		var err error
		if teeKey, err = jose.GenerateTEEKey("EC"); err != nil {
			panic(err)
		}
	})
	return teeKey
}

// checkAnswer fails on a server error or an error answer that is not a
// KBS error body.
func checkAnswer(t *testing.T, rec *httptest.ResponseRecorder) {
	t.Helper()
	if rec.Code >= 500 {
		t.Fatalf("server error %d: %s", rec.Code, rec.Body)
	}
	if rec.Code != http.StatusOK {
		var info protocol.ErrorInformation
		if err := json.Unmarshal(rec.Body.Bytes(), &info); err != nil {
			t.Fatalf("%d answer is not JSON: %q", rec.Code, rec.Body)
		}
		if _, ok := protocol.ParseErrorInformation(info); !ok {
			t.Fatalf("%d answer is not a KBS error: %q", rec.Code, rec.Body)
		}
	}
}

// fuzzKBS is shared by the HTTP fuzz targets: building a server compiles
// the policies, too slow to do per input.
func fuzzKBS(f *testing.F) *testKBS {
	// Every input comes from one address: no rate limit, or the fuzzer
	// would see little but 429.
	k := newKBS(f, baseConfig("@DATA@", unlimited))
	k.registerSampleRVs(f)
	return k
}

func FuzzAuthRequest(f *testing.F) {
	k := fuzzKBS(f)
	for _, s := range []string{`{"version":"0.4.0","tee":"sample","extra-params":{}}`, `{"version":"0.4.0","tee":"snp","extra-params":""}`,
		`{"version":"0.3.0","tee":"sample"}`, `{"version":"0.4.0","tee":"x"}`, `{}`, `[]`, `null`, ``, `{"version":"0.4.0","tee":"tdx"}{}`,
		`{"version":"0.4.0","tee":"sample","extra-params":{"a":[1,2,{"b":null}]}}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		rec := serve(k.srv, "POST", "/kbs/v0/auth", body, "")
		checkAnswer(t, rec)
		if rec.Code == http.StatusOK {
			var req protocol.Request
			if err := json.Unmarshal(body, &req); err != nil || req.Version != protocol.Version || req.Tee == "" {
				t.Fatalf("accepted %q", body)
			}
			var ch protocol.Challenge
			if err := json.Unmarshal(rec.Body.Bytes(), &ch); err != nil || ch.Nonce == "" {
				t.Fatalf("challenge %q", rec.Body)
			}
			if !strings.HasPrefix(rec.Header().Get("Set-Cookie"), protocol.SessionCookie+"=") {
				t.Fatal("no session cookie")
			}
		}
	})
}

func FuzzAttestRequest(f *testing.F) {
	k := fuzzKBS(f)
	key := testTEEKey(f)
	// Every input answers one session, so that the seeds built for its
	// nonce carry valid evidence.
	sess, err := k.srv.sessions.create(protocol.TeeSample)
	if err != nil {
		f.Fatal(err)
	}
	fixedNonce := sess.Nonce
	good := attestationBody(f, fixedNonce, fixedNonce, key)
	f.Add(good)
	f.Add(attestationBody(f, fixedNonce, "other", key))
	f.Add(attestationBody(f, "other", "other", key))
	var m map[string]any
	json.Unmarshal(good, &m)
	m["init-data"] = map[string]any{"format": "toml", "body": "version = \"0.1.0\"\nalgorithm = \"sha256\"\n"}
	withInit, _ := json.Marshal(m)
	f.Add(withInit)
	m["tee-evidence"].(map[string]any)["additional_evidence"] = `{"sample":{"svn":"1"}}`
	withMore, _ := json.Marshal(m)
	f.Add(withMore)
	f.Add([]byte(`{}`))
	f.Add([]byte(`{"runtime-data":{"nonce":"` + fixedNonce + `","tee-pubkey":{"kty":"RSA","alg":"RSA-OAEP-256","n":"AQAB","e":"AQAB"}},"tee-evidence":{"primary_evidence":{}}}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		defer k.srv.store.Delete(bg, SessionNamespace, sess.ID)

		rec := serve(k.srv, "POST", "/kbs/v0/attest", body, sess.ID)
		checkAnswer(t, rec)
		if rec.Code == http.StatusOK {
			var at protocol.AttestationToken
			if err := json.Unmarshal(rec.Body.Bytes(), &at); err != nil {
				t.Fatalf("answer %q", rec.Body)
			}
			claims, _, err := k.srv.tokens.Verify(at.Token)
			if err != nil {
				t.Fatalf("issued token does not verify: %v", err)
			}
			// The token vouches for the key the evidence was bound to.
			var att protocol.Attestation
			if err := json.Unmarshal(body, &att); err != nil {
				t.Fatalf("accepted %q", body)
			}
			pub, err := teePubKeyOf(claims)
			if err != nil {
				t.Fatal(err)
			}
			if _, _, err := jose.ParsePublicKey(pub, false); err != nil {
				t.Fatalf("token vouches for an unusable key: %v", err)
			}
		}
	})
}

// FuzzSessionCookie: any Cookie header gets a KBS answer, and only the
// token of the attested session, held in its cookie, releases the
// resource.
func FuzzSessionCookie(f *testing.F) {
	k := fuzzKBS(f)
	k.srv.resources.policy.Set(bg, ResourcePolicyID, respolicy.Affirming)
	k.srv.resources.store.Put(bg, ResourceNamespace, "default/key/x", []byte("x"))
	token, held := attestDirect(f, k)
	name := protocol.SessionCookie + "="
	for _, s := range []string{name + held, "a=b; " + name + `"` + held + `"`, name + held[:40], name + held + ".x",
		name + ";" + name + held, name + strings.Replace(held, ".", "..", 1), "", name} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, header string) {
		req := httptest.NewRequest("GET", "/kbs/v0/resource/default/key/x", nil)
		req.Header.Set("Cookie", header)
		rec := httptest.NewRecorder()
		k.srv.Handler().ServeHTTP(rec, req)
		checkAnswer(t, rec)
		if rec.Code == http.StatusOK {
			value, _ := sessionCookie(req.Header)
			if _, got, _ := strings.Cut(value, "."); got != token {
				t.Fatalf("released to cookie %q", header)
			}
		}
	})
}

func FuzzParseConfig(f *testing.F) {
	f.Add([]byte(trusteeConfig))
	f.Add([]byte(baseConfig("/tmp/x", "")))
	f.Add([]byte("[http_server]\nprivate_key = \"k\"\ncertificate = \"c\"\n[storage_backend]\nstorage_type = \"LocalJson\"\n[storage_backend.backends.local_fs]\ndir_path = \"/d\"\n"))
	f.Add([]byte("[http_server]\ninsecure_http = true\n[attestation_service]\ntype = \"coco_as_restful\"\nas_addr = \"https://as\"\n"))
	f.Add([]byte("[http_server]\ninsecure_http = true\n[admin]\nauthorization_mode = \"DenyAll\"\n[[admin.authorization.regex_acl.acls]]\nrole = \"a\"\nallowed_endpoints = \"^/$\"\n"))
	f.Add([]byte(""))
	f.Fuzz(func(t *testing.T, b []byte) {
		cfg, err := ParseConfig(b, quietLog())
		if err != nil {
			return
		}
		hs := cfg.HTTPServer
		if len(hs.Sockets) == 0 || hs.PayloadRequestSize <= 0 || cfg.AttestationService.Timeout <= 0 ||
			cfg.AttestationService.TokenBroker.DurationMin <= 0 || cfg.DataDir == "" {
			t.Fatalf("defaults not applied: %+v", cfg)
		}
		if !hs.InsecureHTTP && (hs.PrivateKey == "" || hs.Certificate == "") {
			t.Fatal("plain HTTP without insecure_http")
		}
		switch cfg.StorageBackend.StorageType {
		case "Memory":
		case "Embedded":
			if cfg.StorageBackend.Backends.Embedded.Path == "" {
				t.Fatal("embedded store without a path")
			}
		default:
			t.Fatalf("storage type %q", cfg.StorageBackend.StorageType)
		}
		switch cfg.AttestationService.Type {
		case ASBuiltin:
		case ASRestful:
			if cfg.AttestationService.ASAddr == "" {
				t.Fatal("restful AS without an address")
			}
		default:
			t.Fatalf("AS type %q", cfg.AttestationService.Type)
		}
	})
}

// FuzzCanonicalPath: a path CanonicalPath accepts is its own cleaned form,
// so no other spelling of it reaches routing or the ACLs, and an accepted
// admin path carries no query.
func FuzzCanonicalPath(f *testing.F) {
	for _, s := range []string{"/kbs/v0/resource/a/b/c", "/kbs/v0/resource/a/b/c?/public", "/kbs/v0/reference-value/",
		"//kbs/v0", "/kbs/v0/%2e%2e/x", "/kbs/v0/a%2fb", "/kbs/v0/a%252fb", "/x/../kbs/v0/auth", "/kbs/v0/auth?", "/"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, target string) {
		u, err := url.ParseRequestURI(target)
		if err != nil {
			return
		}
		p, err := CanonicalPath(u)
		if err != nil {
			return
		}
		if path.Clean(p) != p || strings.Contains(strings.ToLower(u.RawPath), "%2f") {
			t.Errorf("%q accepted as %q", target, p)
		}
		if _, err := adminPath(u); err == nil && (u.RawQuery != "" || u.ForceQuery) {
			t.Errorf("admin path %q with a query accepted", target)
		}
	})
}
