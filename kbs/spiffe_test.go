package kbs

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/cocoon-cc/cocoon/guest/attester/sample"
	"github.com/cocoon-cc/cocoon/jose"
	"github.com/cocoon-cc/cocoon/kbs/client"
	"github.com/cocoon-cc/cocoon/protocol"
)

const testTD = "example.org"

// spiffePolicy gives affirming appraisals the IDs below /ns/prod.
const spiffePolicy = `package policy
import rego.v1
default allow := false
allow if {
	input.submods.cpu0["ear.status"] == "affirming"
	startswith(data.path, "/ns/prod/")
	data["trust-domain"] == "example.org"
}
`

func spiffeInitdata(id string) []byte {
	return []byte("version = \"0.1.0\"\nalgorithm = \"sha384\"\n[data]\n\"spiffe.toml\" = '''\nid = \"" + id + "\"\n'''\n")
}

// newSPIFFEKBS is a KBS of trust domain example.org whose sample TEE
// appraises affirming.
func newSPIFFEKBS(t testing.TB) *testKBS {
	t.Helper()
	k := newKBS(t, baseConfig("@DATA@", "[spiffe]\ntrust_domain = \""+testTD+"\"\n"))
	k.registerSampleRVs(t)
	return k
}

// spiffeClient is a KBS client of a guest launched with initdata.
func spiffeClient(t testing.TB, url string, initdata []byte, key *jose.TEEKey) *client.Client {
	t.Helper()
	jar, _ := cookiejar.New(nil)
	c, err := client.New(url, sample.Attester{}, client.Options{HTTP: &http.Client{Jar: jar, Timeout: 30 * time.Second},
		InitData: initdata, Key: key})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func newCSR(t testing.TB) (*ecdsa.PrivateKey, []byte) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, k)
	if err != nil {
		t.Fatal(err)
	}
	return k, der
}

func kindOf(err error) protocol.Kind {
	var kerr *protocol.Error
	if errors.As(err, &kerr) {
		return kerr.Kind
	}
	return ""
}

// TestSPIFFEIssue: an attested guest whose initdata names an ID the policy
// allows gets an X.509-SVID for its own key and JWT-SVIDs that standard
// go-spiffe validation accepts under the published bundle; the default
// policy denies everything.
func TestSPIFFEIssue(t *testing.T) {
	k := newSPIFFEKBS(t)
	c := spiffeClient(t, k.ts.URL, spiffeInitdata("/ns/prod/web"), nil)
	key, csr := newCSR(t)
	if _, err := c.X509SVID(bg, csr); kindOf(err) != protocol.KindPolicyDeny {
		t.Fatalf("default policy: %v, want PolicyDeny", err)
	}
	if err := k.admin(t).SetSPIFFEPolicy(bg, spiffePolicy); err != nil {
		t.Fatal(err)
	}
	resp, err := c.X509SVID(bg, csr)
	if err != nil {
		t.Fatal(err)
	}
	bundleJSON, err := c.SPIFFEBundle(bg)
	if err != nil {
		t.Fatal(err)
	}
	td := spiffeid.RequireTrustDomainFromString(testTD)
	bundle, err := spiffebundle.Parse(td, bundleJSON)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(bundleJSON, resp.Bundle) {
		t.Error("the SVID's bundle is not the bundle endpoint's")
	}
	var certs []*x509.Certificate
	for _, der := range resp.CertChain {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		certs = append(certs, c)
	}
	id, _, err := x509svid.Verify(certs, bundle)
	if err != nil {
		t.Fatal(err)
	}
	if id.String() != "spiffe://example.org/ns/prod/web" || resp.SPIFFEID != id.String() {
		t.Fatalf("SVID of %s (%s)", id, resp.SPIFFEID)
	}
	if !key.PublicKey.Equal(certs[0].PublicKey) {
		t.Fatal("the SVID certifies another key than the CSR's")
	}
	if d := time.Until(certs[0].NotAfter); d < 55*time.Minute || d > 61*time.Minute || resp.ExpiresAt != certs[0].NotAfter.Unix() {
		t.Errorf("SVID lifetime %v (expires_at %d)", d, resp.ExpiresAt)
	}
	jwtResp, err := c.JWTSVID(bg, []string{"db", "cache"})
	if err != nil {
		t.Fatal(err)
	}
	sv, err := jwtsvid.ParseAndValidate(jwtResp.Token, bundle, []string{"db"})
	if err != nil {
		t.Fatal(err)
	}
	if sv.ID != id || jwtResp.SPIFFEID != id.String() {
		t.Fatalf("JWT-SVID of %s", sv.ID)
	}
	if _, err := jwtsvid.ParseAndValidate(jwtResp.Token, bundle, []string{"other"}); err == nil {
		t.Error("JWT-SVID valid for an audience it was not issued for")
	}
	// An ID the policy does not give, an ID of another trust domain, no ID.
	for _, tc := range []struct {
		initdata []byte
		kind     protocol.Kind
	}{
		{spiffeInitdata("/ns/dev/web"), protocol.KindPolicyDeny},
		{spiffeInitdata("spiffe://evil.org/ns/prod/web"), protocol.KindPluginInternal},
		{spiffeInitdata("/"), protocol.KindPluginInternal},
		{[]byte("version = \"0.1.0\"\nalgorithm = \"sha384\"\n[data]\n"), protocol.KindPluginInternal},
		{nil, protocol.KindPluginInternal},
	} {
		c := spiffeClient(t, k.ts.URL, tc.initdata, nil)
		if _, err := c.X509SVID(bg, csr); kindOf(err) != tc.kind {
			t.Errorf("initdata %q: %v, want %s", tc.initdata, err, tc.kind)
		}
	}
	if _, err := c.JWTSVID(bg, nil); kindOf(err) != protocol.KindPluginInternal {
		t.Errorf("JWT-SVID without audience: %v", err)
	}
}

// recorder keeps the last SVID request body a KBS received.
type recorder struct {
	mu   sync.Mutex
	body []byte
	next http.Handler
}

func (r *recorder) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	if strings.HasPrefix(req.URL.Path, "/kbs/v0/spiffe/") && req.Method == http.MethodPost {
		b, _ := io.ReadAll(req.Body)
		r.mu.Lock()
		r.body = b
		r.mu.Unlock()
		req.Body = io.NopCloser(bytes.NewReader(b))
	}
	r.next.ServeHTTP(w, req)
}

// TestSPIFFEReplay: an SVID request is bound to its session. Replayed
// with another session's token it is refused (the other session's TEE key
// did not sign it), and a request signed by the right key but carrying
// another nonce than the token's session is refused too.
func TestSPIFFEReplay(t *testing.T) {
	k := newSPIFFEKBS(t)
	if err := k.admin(t).SetSPIFFEPolicy(bg, spiffePolicy); err != nil {
		t.Fatal(err)
	}
	rec := &recorder{next: k.srv.Handler()}
	ts := httptest.NewServer(rec)
	t.Cleanup(ts.Close)
	init := spiffeInitdata("/ns/prod/web")
	victim := spiffeClient(t, ts.URL, init, nil)
	_, csr := newCSR(t)
	if _, err := victim.X509SVID(bg, csr); err != nil {
		t.Fatal(err)
	}
	captured := rec.body

	key, err := jose.GenerateTEEKey("EC")
	if err != nil {
		t.Fatal(err)
	}
	other := spiffeClient(t, ts.URL, init, key)
	token, err := other.Attest(bg)
	if err != nil {
		t.Fatal(err)
	}
	post := func(body []byte) response {
		return k.do(t, http.MethodPost, "/kbs/v0/spiffe/x509-svid", body, map[string]string{"Authorization": "Bearer " + token})
	}
	if r := post(captured); r.status != http.StatusUnauthorized || r.kind() != protocol.KindPluginInternal ||
		!strings.Contains(string(r.body), "not signed by the tee-pubkey") {
		t.Fatalf("replayed request: %d %s", r.status, r.body)
	}
	payload, _ := json.Marshal(protocol.SVIDRequest{Nonce: "another-session", CSR: csr})
	jws, err := key.Sign(payload)
	if err != nil {
		t.Fatal(err)
	}
	if r := post([]byte(jws)); r.kind() != protocol.KindPluginInternal || !strings.Contains(string(r.body), "nonce") {
		t.Fatalf("request with another nonce: %d %s", r.status, r.body)
	}
	// Unsigned and garbage bodies, no token.
	for _, body := range []string{string(payload), "", "a.b.c"} {
		if r := post([]byte(body)); r.kind() != protocol.KindPluginInternal {
			t.Errorf("body %q: %d %s", body, r.status, r.body)
		}
	}
	if r := k.do(t, http.MethodPost, "/kbs/v0/spiffe/x509-svid", []byte(jws), nil); r.kind() != protocol.KindTokenNotFound {
		t.Errorf("no token: %d %s", r.status, r.body)
	}
}

// TestSPIFFEEndpoints: the bundle is public, the policy is an admin's, and
// a KBS without [spiffe] has no such plugin.
func TestSPIFFEEndpoints(t *testing.T) {
	k := newSPIFFEKBS(t)
	r := k.do(t, http.MethodGet, "/kbs/v0/spiffe/bundle", nil, nil)
	if r.status != http.StatusOK {
		t.Fatalf("bundle: %d %s", r.status, r.body)
	}
	b, err := spiffebundle.Parse(spiffeid.RequireTrustDomainFromString(testTD), r.body)
	if err != nil || len(b.X509Authorities()) != 1 || len(b.JWTAuthorities()) != 1 {
		t.Fatalf("bundle %s: %v", r.body, err)
	}
	if r := k.do(t, http.MethodPost, "/kbs/v0/spiffe-policy", []byte(`{"policy":"eA"}`), nil); r.kind() != protocol.KindAdminAuth {
		t.Errorf("policy without admin token: %d %s", r.status, r.body)
	}
	if err := k.admin(t).SetSPIFFEPolicy(bg, "package policy\nallow if {"); kindOf(err) != protocol.KindPolicyEngine {
		t.Errorf("bad policy: %v", err)
	}
	for _, p := range []string{"/kbs/v0/spiffe/other", "/kbs/v0/spiffe/bundle/x"} {
		if r := k.do(t, http.MethodGet, p, nil, nil); r.kind() != protocol.KindPluginNotFound {
			t.Errorf("%s: %d %s", p, r.status, r.body)
		}
	}
	plain := newKBS(t, "")
	if r := plain.do(t, http.MethodGet, "/kbs/v0/spiffe/bundle", nil, nil); r.status != http.StatusNotFound || r.kind() != protocol.KindPluginNotFound {
		t.Errorf("KBS without [spiffe]: %d %s", r.status, r.body)
	}
}
