package client_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/pem"
	"errors"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	gojose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/cocoon-cc/cocoon/guest/attester/sample"
	"github.com/cocoon-cc/cocoon/internal/testutil/kbstest"
	"github.com/cocoon-cc/cocoon/jose"
	"github.com/cocoon-cc/cocoon/kbs/client"
	"github.com/cocoon-cc/cocoon/kbs/respolicy"
	"github.com/cocoon-cc/cocoon/protocol"
)

var ctx = context.Background()

type env struct {
	url      string
	hc       *http.Client // the test server's client (TLS roots when TLS)
	adminKey crypto.Signer
	admin    *client.Admin
}

// startKBS runs an in-process KBS (memory store, generated admin key) with
// the sample reference values registered and resources released to
// affirming tokens of any TEE.
func startKBS(t *testing.T, tls bool) *env {
	t.Helper()
	k := kbstest.Start(t, kbstest.Options{TLS: tls})
	e := &env{url: k.URL, hc: k.HTTP, adminKey: k.AdminKey, admin: k.Admin}
	for name, v := range map[string]any{"launch_digest": []string{"abcde"}, "svn": []string{"1"},
		"major_version": 1, "minimum_minor_version": 0} {
		if err := e.admin.RegisterSampleReferenceValue(ctx, name, v); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.admin.SetResourcePolicy(ctx, respolicy.Affirming); err != nil {
		t.Fatal(err)
	}
	return e
}

func newJarClient() *http.Client {
	jar, _ := cookiejar.New(nil)
	return &http.Client{Jar: jar, Timeout: 30 * time.Second}
}

func kindOf(err error) protocol.Kind {
	var kerr *protocol.Error
	if errors.As(err, &kerr) {
		return kerr.Kind
	}
	return ""
}

func TestGetResource(t *testing.T) {
	e := startKBS(t, false)
	if err := e.admin.SetResource(ctx, "/default/key/one", []byte("one")); err != nil {
		t.Fatal(err)
	}
	c, err := client.New(e.url+"/", sample.Attester{}, client.Options{HTTP: newJarClient()})
	if err != nil {
		t.Fatal(err)
	}
	if c.Key() == nil || c.Key().Public().Kty != "EC" {
		t.Fatalf("default key %+v", c.Key())
	}
	// No Attest call first: GetResource attests by itself.
	for _, p := range []string{"default/key/one", "/default/key/one"} {
		got, err := c.GetResource(ctx, p)
		if err != nil || string(got) != "one" {
			t.Fatalf("GetResource(%q) = %q, %v", p, got, err)
		}
	}
	_, err = c.GetResource(ctx, "default/key/none")
	if !protocol.IsResourceNotFound(err) || !strings.Contains(err.Error(), "default/key/none") {
		t.Errorf("missing resource: %v", err)
	}
	_, err = c.GetResource(ctx, "default/../one")
	if kindOf(err) != protocol.KindInvalidPath {
		t.Errorf("bad path: %v", err)
	}
	if err := e.admin.SetResourcePolicy(ctx, respolicy.DenyAll); err != nil {
		t.Fatal(err)
	}
	if _, err := c.GetResource(ctx, "default/key/one"); kindOf(err) != protocol.KindPolicyDeny {
		t.Errorf("deny all: %v", err)
	}
}

// TestConcurrentGetResource: callers that find no token at the same time
// share one handshake (they share the session cookie too).
func TestConcurrentGetResource(t *testing.T) {
	e := startKBS(t, false)
	if err := e.admin.SetResource(ctx, "default/key/one", []byte("one")); err != nil {
		t.Fatal(err)
	}
	var auths atomic.Int32
	hc := newJarClient()
	hc.Transport = countAuth{&auths}
	c, err := client.New(e.url, sample.Attester{}, client.Options{HTTP: hc})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			if got, err := c.GetResource(ctx, "default/key/one"); err != nil || string(got) != "one" {
				t.Errorf("GetResource = %q, %v", got, err)
			}
		})
	}
	wg.Wait()
	if n := auths.Load(); n != 1 {
		t.Fatalf("%d handshakes, want 1", n)
	}
}

// countAuth counts the handshakes a client starts.
type countAuth struct{ n *atomic.Int32 }

func (c countAuth) RoundTrip(r *http.Request) (*http.Response, error) {
	if strings.HasSuffix(r.URL.Path, "/auth") {
		c.n.Add(1)
	}
	return http.DefaultTransport.RoundTrip(r)
}

// TestSessionBeforeBearer: a client holding a session cookie fetches with
// it alone; when the KBS does not know the session, the fetch is repeated
// with the bearer token, without a new handshake.
func TestSessionBeforeBearer(t *testing.T) {
	e := startKBS(t, false)
	if err := e.admin.SetResource(ctx, "default/key/s", []byte("session")); err != nil {
		t.Fatal(err)
	}
	rec := &fetchRecorder{}
	c, err := client.New(e.url, sample.Attester{}, client.Options{HTTP: &http.Client{Transport: rec}})
	if err != nil {
		t.Fatal(err)
	}
	if got, err := c.GetResource(ctx, "default/key/s"); err != nil || string(got) != "session" {
		t.Fatalf("GetResource = %q, %v", got, err)
	}
	if want := []string{"cookie"}; !slices.Equal(rec.fetches, want) {
		t.Errorf("fetches sent %v, want %v", rec.fetches, want)
	}
	// The KBS no longer sees the session (as after a restart with memory
	// sessions): the bearer token is enough.
	rec.fetches, rec.dropCookie = nil, true
	if got, err := c.GetResource(ctx, "default/key/s"); err != nil || string(got) != "session" {
		t.Fatalf("GetResource without the session = %q, %v", got, err)
	}
	if want := []string{"", "bearer"}; !slices.Equal(rec.fetches, want) {
		t.Errorf("fetches sent %v, want %v", rec.fetches, want)
	}
	if rec.auths != 1 {
		t.Errorf("%d handshakes, want 1", rec.auths)
	}
}

// fetchRecorder records which credentials each resource request carries
// ("cookie", "bearer" or ""), and can drop the session cookie from them.
type fetchRecorder struct {
	dropCookie bool
	fetches    []string
	auths      int
}

func (f *fetchRecorder) RoundTrip(r *http.Request) (*http.Response, error) {
	if strings.HasSuffix(r.URL.Path, "/auth") {
		f.auths++
	}
	if strings.Contains(r.URL.Path, "/resource/") {
		if f.dropCookie {
			r = r.Clone(r.Context())
			r.Header.Del("Cookie")
		}
		var sent []string
		if r.Header.Get("Cookie") != "" {
			sent = append(sent, "cookie")
		}
		if r.Header.Get("Authorization") != "" {
			sent = append(sent, "bearer")
		}
		f.fetches = append(f.fetches, strings.Join(sent, "+"))
	}
	return http.DefaultTransport.RoundTrip(r)
}

func TestRSAKeyAndDefaultHTTPClient(t *testing.T) {
	e := startKBS(t, false)
	e.admin.SetResource(ctx, "default/key/r", []byte("rsa"))
	rk, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	key, _ := jose.NewTEEKey(rk)
	// No HTTP client given: the default one keeps the session cookie.
	c, err := client.New(e.url, sample.Attester{}, client.Options{Key: key})
	if err != nil {
		t.Fatal(err)
	}
	if got, err := c.GetResource(ctx, "default/key/r"); err != nil || string(got) != "rsa" {
		t.Errorf("RSA TEE key: %q, %v", got, err)
	}
}

func TestReattestWhenTokenRefused(t *testing.T) {
	e := startKBS(t, false)
	e.admin.SetResource(ctx, "default/key/x", []byte("x"))
	// A stale token from somewhere else: the KBS refuses it and the client
	// attests again.
	c, _ := client.New(e.url, sample.Attester{}, client.Options{HTTP: newJarClient(), Token: "stale.token.here"})
	if got, err := c.GetResource(ctx, "default/key/x"); err != nil || string(got) != "x" {
		t.Fatalf("re-attestation: %q, %v", got, err)
	}
	// Without an attester there is no second chance.
	c2, _ := client.New(e.url, nil, client.Options{HTTP: newJarClient(), Token: "stale.token.here"})
	if _, err := c2.GetResource(ctx, "default/key/x"); kindOf(err) != protocol.KindTokenVerifier {
		t.Errorf("no attester, stale token: %v", err)
	}
	if _, err := c2.Attest(ctx); err == nil {
		t.Error("Attest without an attester succeeded")
	}
	// A valid token with its key works without an attester or a session.
	att, _ := client.New(e.url, sample.Attester{}, client.Options{HTTP: newJarClient()})
	tok, err := att.Attest(ctx)
	if err != nil {
		t.Fatal(err)
	}
	c3, _ := client.New(e.url, nil, client.Options{HTTP: newJarClient(), Token: tok, Key: att.Key()})
	if got, err := c3.GetResource(ctx, "default/key/x"); err != nil || string(got) != "x" {
		t.Errorf("bearer token client: %q, %v", got, err)
	}
	// The same token with another key cannot open the resource.
	c4, _ := client.New(e.url, nil, client.Options{HTTP: newJarClient(), Token: tok})
	if _, err := c4.GetResource(ctx, "default/key/x"); !errors.Is(err, jose.ErrDecryptionFailed) {
		t.Errorf("token of another key: %v, want ErrDecryptionFailed", err)
	}
}

func TestInitDataSent(t *testing.T) {
	e := startKBS(t, false)
	e.admin.SetResource(ctx, "default/key/x", []byte("x"))
	doc := []byte("version = \"0.1.0\"\nalgorithm = \"sha384\"\n[data]\n\"aa.toml\" = \"a = 1\"\n")
	c, _ := client.New(e.url, sample.Attester{}, client.Options{HTTP: newJarClient(), InitData: doc})
	if _, err := c.GetResource(ctx, "default/key/x"); err != nil {
		t.Fatal(err)
	}
	bad, _ := client.New(e.url, sample.Attester{}, client.Options{HTTP: newJarClient(), InitData: []byte("not initdata")})
	if _, err := bad.Attest(ctx); kindOf(err) != protocol.KindAttestation {
		t.Errorf("bad initdata: %v", err)
	}
}

func TestTLS(t *testing.T) {
	e := startKBS(t, true)
	e.admin.SetResource(ctx, "default/key/x", []byte("over tls"))
	srvURL := e.url
	// Trust the test server's (self-signed) certificate through a PEM file.
	var pemBytes []byte
	resp, err := e.hc.Get(srvURL + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	for _, cert := range resp.TLS.PeerCertificates {
		pemBytes = append(pemBytes, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw})...)
	}
	certFile := filepath.Join(t.TempDir(), "kbs.crt")
	os.WriteFile(certFile, pemBytes, 0o600)
	hc, err := client.HTTPClient(certFile)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := client.New(srvURL, sample.Attester{}, client.Options{HTTP: hc})
	if got, err := c.GetResource(ctx, "default/key/x"); err != nil || string(got) != "over tls" {
		t.Fatalf("over TLS: %q, %v", got, err)
	}
	// Without the certificate the handshake fails.
	plain, _ := client.HTTPClient("")
	c2, _ := client.New(srvURL, sample.Attester{}, client.Options{HTTP: plain})
	if _, err := c2.Attest(ctx); err == nil {
		t.Error("untrusted certificate accepted")
	}
	// Bad certificate files.
	if _, err := client.HTTPClient(filepath.Join(t.TempDir(), "missing.crt")); err == nil {
		t.Error("missing cert file accepted")
	}
	empty := filepath.Join(t.TempDir(), "empty.crt")
	os.WriteFile(empty, []byte("no pem here"), 0o600)
	if _, err := client.HTTPClient(empty); err == nil {
		t.Error("cert file without certificates accepted")
	}
}

// TestSharedHTTPClient: clients sharing an HTTP client without a cookie
// jar each keep their own session, so they attest at the same time.
func TestSharedHTTPClient(t *testing.T) {
	e := startKBS(t, false)
	if err := e.admin.SetResource(ctx, "default/key/x", []byte("shared")); err != nil {
		t.Fatal(err)
	}
	hc, _ := client.HTTPClient("")
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, _ := client.New(e.url, sample.Attester{}, client.Options{HTTP: hc})
			if got, err := c.GetResource(ctx, "default/key/x"); err != nil || string(got) != "shared" {
				t.Errorf("%q, %v", got, err)
			}
		}()
	}
	wg.Wait()
}

func TestAdminClient(t *testing.T) {
	e := startKBS(t, false)
	if err := e.admin.SetAttestationPolicy(ctx, "custom_cpu", "rego", "package policy\nimport rego.v1\ntrust_claims := {\"hardware\": 2}\n"); err != nil {
		t.Fatal(err)
	}
	if err := e.admin.SetAttestationPolicy(ctx, "bad_cpu", "rego", "package nope\n"); kindOf(err) != protocol.KindAttestation {
		t.Errorf("bad policy: %v", err)
	}
	v, err := e.admin.GetReferenceValue(ctx, "svn")
	if err != nil || string(v) != `["1"]` {
		t.Errorf("GetReferenceValue = %s, %v", v, err)
	}
	if v, err := e.admin.GetReferenceValue(ctx, "nothing"); kindOf(err) != protocol.KindRvps {
		t.Errorf("unknown reference value = %s, %v", v, err)
	}
	if err := e.admin.SetResource(ctx, "default/key/d", []byte("d")); err != nil {
		t.Fatal(err)
	}
	if err := e.admin.DeleteResource(ctx, "default/key/d"); err != nil {
		t.Fatal(err)
	}
	c, _ := client.New(e.url, sample.Attester{}, client.Options{HTTP: newJarClient()})
	if _, err := c.GetResource(ctx, "default/key/d"); !protocol.IsResourceNotFound(err) {
		t.Errorf("deleted resource: %v", err)
	}
	// A static token: a good one, then refused ones.
	good, err := client.SignAdminToken(e.adminKey, protocol.AdminRole, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if err := client.NewAdmin(e.url, e.hc, good).SetResource(ctx, "default/key/s", []byte("s")); err != nil {
		t.Errorf("static token: %v", err)
	}
	_, other, _ := ed25519.GenerateKey(rand.Reader)
	for name, a := range map[string]*client.Admin{
		"no token":    client.NewAdmin(e.url, e.hc, ""),
		"other key":   client.NewAdminWithKey(e.url, e.hc, other),
		"other role":  client.NewAdmin(e.url, e.hc, mustSign(t, e.adminKey, "viewer", time.Minute)),
		"expired":     client.NewAdmin(e.url, e.hc, mustSign(t, e.adminKey, protocol.AdminRole, -time.Hour)),
		"not a token": client.NewAdmin(e.url, e.hc, "x.y.z"),
	} {
		if err := a.SetResource(ctx, "default/key/s", []byte("t")); kindOf(err) != protocol.KindAdminAuth {
			t.Errorf("%s: %v, want AdminAuthAccess", name, err)
		}
	}
}

func mustSign(t *testing.T, k crypto.Signer, role string, ttl time.Duration) string {
	t.Helper()
	tok, err := client.SignAdminToken(k, role, ttl)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func TestSignAdminToken(t *testing.T) {
	_, ed, _ := ed25519.GenerateKey(rand.Reader)
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	for name, c := range map[string]struct {
		key crypto.Signer
		pub any
		alg gojose.SignatureAlgorithm
	}{
		"Ed25519": {ed, ed.Public(), gojose.EdDSA},
		"P-256":   {ec, &ec.PublicKey, gojose.ES256},
	} {
		before := time.Now()
		tok, err := client.SignAdminToken(c.key, "ops", 10*time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		parsed, err := jwt.ParseSigned(tok, []gojose.SignatureAlgorithm{c.alg})
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if parsed.Headers[0].Algorithm != string(c.alg) || parsed.Headers[0].ExtraHeaders["typ"] != "JWT" {
			t.Errorf("%s: header %+v", name, parsed.Headers[0])
		}
		var claims struct {
			jwt.Claims
			Role string `json:"role"`
		}
		if err := parsed.Claims(c.pub, &claims); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if claims.Role != "ops" || claims.Expiry == nil || claims.NotBefore == nil || claims.IssuedAt == nil {
			t.Errorf("%s: claims %+v", name, claims)
		}
		if exp := claims.Expiry.Time(); exp.Before(before.Add(10*time.Minute-time.Second)) || exp.After(time.Now().Add(10*time.Minute+time.Second)) {
			t.Errorf("%s: exp %v", name, exp)
		}
		if !claims.NotBefore.Time().Before(before) {
			t.Errorf("%s: nbf %v not before issue", name, claims.NotBefore.Time())
		}
	}
	rk, _ := rsa.GenerateKey(rand.Reader, 1024)
	if _, err := client.SignAdminToken(rk, "ops", time.Minute); err == nil {
		t.Error("RSA admin key accepted")
	}
}

func TestDo(t *testing.T) {
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/kbs-error":
			w.WriteHeader(http.StatusUnauthorized)
			io.WriteString(w, `{"type":"https://github.com/confidential-containers/kbs/errors/PolicyDeny","detail":"no"}`)
		case "/proxy-error":
			w.WriteHeader(http.StatusBadGateway)
			io.WriteString(w, "<html>bad gateway</html>\n")
		case "/other-json-error":
			w.WriteHeader(http.StatusNotFound)
			io.WriteString(w, `{"type":"about:blank","detail":"x"}`)
		case "/echo":
			if r.Header.Get("Authorization") != "Bearer tok" || r.Header.Get("Content-Type") != "application/json" {
				w.WriteHeader(http.StatusTeapot)
			}
			io.Copy(w, r.Body)
		case "/huge":
			w.Write(bytes.Repeat([]byte("a"), client.MaxResponseSize+10))
		default:
			io.WriteString(w, `not json`)
		}
	}))
	defer ts.Close()
	err := client.Do(ctx, ts.Client(), "GET", ts.URL+"/kbs-error", "", nil, nil)
	var kerr *protocol.Error
	if !errors.As(err, &kerr) || kerr.Kind != protocol.KindPolicyDeny || kerr.Detail != "no" || kerr.Status() != 401 {
		t.Errorf("KBS error: %v", err)
	}
	err = client.Do(ctx, ts.Client(), "GET", ts.URL+"/proxy-error", "", nil, nil)
	if err == nil || errors.As(err, &kerr) || !strings.Contains(err.Error(), "HTTP 502: <html>bad gateway</html>") {
		t.Errorf("proxy error: %v", err)
	}
	if err := client.Do(ctx, ts.Client(), "GET", ts.URL+"/other-json-error", "", nil, nil); err == nil || errors.As(err, &kerr) {
		t.Errorf("non-KBS JSON error: %v", err)
	}
	var out map[string]int
	if err := client.Do(ctx, ts.Client(), "POST", ts.URL+"/echo", "tok", strings.NewReader(`{"a":1}`), &out); err != nil || out["a"] != 1 {
		t.Errorf("echo: %v %v", out, err)
	}
	var raw []byte
	if err := client.Do(ctx, ts.Client(), "POST", ts.URL+"/echo", "tok", strings.NewReader(`raw bytes`), &raw); err != nil || string(raw) != "raw bytes" {
		t.Errorf("raw: %q %v", raw, err)
	}
	if err := client.Do(ctx, ts.Client(), "GET", ts.URL+"/plain", "", nil, &out); err == nil {
		t.Error("non-JSON answer decoded")
	}
	if err := client.Do(ctx, ts.Client(), "GET", ts.URL+"/huge", "", nil, &raw); err != nil || len(raw) != client.MaxResponseSize {
		t.Errorf("huge answer: %d bytes, %v", len(raw), err)
	}
	if err := client.Do(ctx, ts.Client(), "GET", "http://[::1", "", nil, nil); err == nil {
		t.Error("bad URL accepted")
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := client.Do(cctx, ts.Client(), "GET", ts.URL+"/plain", "", nil, nil); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled context: %v", err)
	}
}
