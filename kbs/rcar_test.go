package kbs

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/cocoon-cc/cocoon/attestation"
	"github.com/cocoon-cc/cocoon/attestation/ear"
	"github.com/cocoon-cc/cocoon/guest/attester/sample"
	"github.com/cocoon-cc/cocoon/jose"
	"github.com/cocoon-cc/cocoon/kbs/client"
	"github.com/cocoon-cc/cocoon/kbs/respolicy"
	"github.com/cocoon-cc/cocoon/protocol"
)

// challenge runs POST /kbs/v0/auth and returns the nonce and session cookie.
func (k *testKBS) challenge(t testing.TB, tee string) (nonce, cookie string) {
	t.Helper()
	r := k.do(t, "POST", "/kbs/v0/auth", []byte(`{"version":"0.4.0","tee":"`+tee+`","extra-params":{}}`), nil)
	if r.status != http.StatusOK {
		t.Fatalf("auth: %d %s", r.status, r.body)
	}
	var ch protocol.Challenge
	if err := json.Unmarshal(r.body, &ch); err != nil {
		t.Fatal(err)
	}
	if cookie = r.setCookie(); cookie == "" {
		t.Fatalf("no session cookie in %v", r.header)
	}
	return ch.Nonce, cookie
}

// attestation builds a sample attestation answering nonce with key,
// bound to boundNonce (normally the same nonce).
func attestationBody(t testing.TB, nonce, boundNonce string, key *jose.TEEKey) []byte {
	t.Helper()
	empty := ""
	rd, err := protocol.ReportData(protocol.RuntimeDataClaims(boundNonce, key.Public(), &empty))
	if err != nil {
		t.Fatal(err)
	}
	ev, _ := sample.Attester{}.Evidence(bg, rd)
	b, _ := json.Marshal(protocol.Attestation{
		RuntimeData: protocol.RuntimeData{Nonce: nonce, TeePubKey: key.Public()},
		TeeEvidence: protocol.CompositeEvidence{Primary: ev, Additional: ""},
	})
	return b
}

// setCookie is the session cookie a response sets ("" if none).
func (r response) setCookie() string {
	for _, c := range (&http.Response{Header: r.header}).Cookies() {
		if c.Name == protocol.SessionCookie {
			return c.Value
		}
	}
	return ""
}

func cookieHdr(id string) map[string]string {
	return map[string]string{"Cookie": protocol.SessionCookie + "=" + id}
}

func TestHandshakeAndResource(t *testing.T) {
	k := newKBS(t, "")
	k.registerSampleRVs(t)
	adm := k.admin(t)
	if err := adm.SetResource(bg, "default/key/one", []byte("secret one")); err != nil {
		t.Fatal(err)
	}
	c := k.newClient(t)
	tok, err := c.Attest(bg)
	if err != nil {
		t.Fatal(err)
	}
	// Cocoon's default resource policy never releases to the sample TEE.
	_, err = c.GetResource(bg, "default/key/one")
	var kerr *protocol.Error
	if !errors.As(err, &kerr) || kerr.Kind != protocol.KindPolicyDeny {
		t.Fatalf("default policy and sample TEE: %v, want PolicyDeny", err)
	}
	if err := adm.SetResourcePolicy(bg, respolicy.Affirming); err != nil {
		t.Fatal(err)
	}
	got, err := c.GetResource(bg, "default/key/one")
	if err != nil || string(got) != "secret one" {
		t.Fatalf("GetResource = %q, %v", got, err)
	}

	// The token is an EAR of the KBS's key carrying the client's TEE key.
	claims, _, err := k.srv.tokens.Verify(tok)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := teePubKeyOf(claims)
	if err != nil || pub != c.Key().Public() {
		t.Errorf("token tee-pubkey %+v, %v", pub, err)
	}
	if claims.Submods["cpu0"].Status != ear.StatusAffirming {
		t.Errorf("status %s", claims.Submods["cpu0"].Status)
	}

	// The token works as a bearer token without the session, and the
	// resource is sealed to the key the token vouches for, not the caller's.
	r := k.do(t, "GET", "/kbs/v0/resource/default/key/one", nil, map[string]string{"Authorization": "Bearer " + tok})
	if r.status != http.StatusOK {
		t.Fatalf("bearer: %d %s", r.status, r.body)
	}
	var resp protocol.Response
	if err := json.Unmarshal(r.body, &resp); err != nil {
		t.Fatal(err)
	}
	if pt, err := c.Key().Decrypt(&resp); err != nil || string(pt) != "secret one" {
		t.Errorf("bearer resource: %q %v", pt, err)
	}
	other, _ := jose.GenerateTEEKey("EC")
	if _, err := other.Decrypt(&resp); err == nil {
		t.Error("another key opened the resource")
	}

	// Metrics count the attestation.
	m := k.do(t, "GET", "/metrics", nil, nil)
	if m.status != http.StatusOK || !bytes.Contains(m.body, []byte(`kbs_attestations_total{result="success",tee="sample"} 1`)) {
		t.Errorf("metrics lack the attestation:\n%s", grep(m.body, "kbs_attestations_total"))
	}
	if !bytes.Contains(m.body, []byte(`kbs_resource_releases_total 2`)) {
		t.Errorf("metrics lack the releases:\n%s", grep(m.body, "kbs_resource_releases_total"))
	}
	if !bytes.Contains(m.body, []byte(`kbs_policy_decisions_total{decision="deny"} 1`)) {
		t.Errorf("metrics lack the denial:\n%s", grep(m.body, "kbs_policy_decisions_total"))
	}
	// Health and JWKS.
	if h := k.do(t, "GET", "/healthz", nil, nil); h.status != http.StatusOK {
		t.Errorf("healthz %d", h.status)
	}
	j := k.do(t, "GET", "/.well-known/jwks.json", nil, nil)
	var set struct {
		Keys []map[string]any `json:"keys"`
	}
	if err := json.Unmarshal(j.body, &set); err != nil || len(set.Keys) != 1 || set.Keys[0]["crv"] != "P-256" {
		t.Errorf("jwks %s", j.body)
	}
	if _, ok := set.Keys[0]["d"]; ok {
		t.Fatal("jwks publishes the private key")
	}
}

func grep(b []byte, prefix string) string {
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, prefix) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

func TestChallengeShape(t *testing.T) {
	k := newKBS(t, "")
	r := k.do(t, "POST", "/kbs/v0/auth", []byte(`{"version":"0.4.0","tee":"sample","extra-params":{}}`), nil)
	if r.status != 200 {
		t.Fatalf("%d %s", r.status, r.body)
	}
	var raw map[string]any
	json.Unmarshal(r.body, &raw)
	nonce, _ := base64.StdEncoding.DecodeString(raw["nonce"].(string))
	if len(nonce) != 32 || raw["extra-params"] != "" {
		t.Errorf("challenge %s", r.body)
	}
	sc := r.header.Get("Set-Cookie")
	if !regexp.MustCompile(`^kbs-session-id=[0-9a-f]{32}; `).MatchString(sc) || !strings.Contains(sc, "Expires=") {
		t.Errorf("Set-Cookie %q", sc)
	}
	cookies := (&http.Response{Header: r.header}).Cookies()
	exp := cookies[0].Expires
	if d := time.Until(exp); d < 4*time.Minute || d > 6*time.Minute {
		t.Errorf("session expires in %v, want about 5 min", d)
	}
	// Two challenges: two sessions, two nonces.
	n1, c1 := k.challenge(t, "sample")
	n2, c2 := k.challenge(t, "sample")
	if n1 == n2 || c1 == c2 {
		t.Error("challenges repeat")
	}
	// Trustee's clients send extra-params as "" or omit it.
	for _, body := range []string{`{"version":"0.4.0","tee":"snp","extra-params":""}`, `{"version":"0.4.0","tee":"tdx"}`} {
		if r := k.do(t, "POST", "/kbs/v0/auth", []byte(body), nil); r.status != 200 {
			t.Errorf("%s: %d %s", body, r.status, r.body)
		}
	}
}

// TestHeldSessions: by default the client holds its attested session (the
// cookie is the session id, a dot and the token) and the KBS stores
// nothing; an edited cookie releases nothing and changes nothing.
func TestHeldSessions(t *testing.T) {
	k := newKBS(t, "")
	k.registerSampleRVs(t)
	k.srv.resources.policy.Set(bg, ResourcePolicyID, respolicy.Affirming)
	k.srv.resources.store.Put(bg, ResourceNamespace, "default/key/x", []byte("x"))
	nonce, id := k.challenge(t, "sample")
	r := k.do(t, "POST", "/kbs/v0/attest", attestationBody(t, nonce, nonce, testTEEKey(t)), cookieHdr(id))
	var at protocol.AttestationToken
	json.Unmarshal(r.body, &at)
	held := r.setCookie()
	if r.status != 200 || held != id+"."+at.Token {
		t.Fatalf("attest: %d, cookie %.60q", r.status, held)
	}
	if ids, _ := k.srv.store.List(bg, SessionNamespace); len(ids) != 0 || k.srv.sessions.live.Load() != 0 {
		t.Errorf("held session stored: %v", ids)
	}
	if r := k.do(t, "GET", "/kbs/v0/resource/default/key/x", nil, cookieHdr(held)); r.status != 200 {
		t.Fatalf("resource: %d %s", r.status, r.body)
	}
	edit := func(i int) string {
		b := []byte(held)
		b[i] ^= 'A' ^ 'B'
		if b[i] == '.' || !cookieSafe(string(b[i:i+1])) {
			b[i] = 'A'
		}
		return string(b)
	}
	sig := strings.LastIndexByte(held, '.')
	for name, cookie := range map[string]string{
		"signature":  edit(sig + 10),
		"claims":     edit(len(id) + len(at.Token)/2),
		"no token":   id + ".",
		"no id":      "." + at.Token,
		"not a JWS":  id + ".token",
		"extra part": held + ".x",
	} {
		r := k.do(t, "GET", "/kbs/v0/resource/default/key/x", nil, cookieHdr(cookie))
		if r.status != 401 {
			t.Errorf("%s: %d %s", name, r.status, r.body)
		}
	}
	// An expired session is refused though its token is still valid.
	k.srv.sessions.now = func() time.Time { return time.Now().Add(time.Hour) }
	if r := k.do(t, "GET", "/kbs/v0/resource/default/key/x", nil, cookieHdr(held)); r.status != 401 || r.kind() != protocol.KindTokenNotFound {
		t.Errorf("expired session: %d %s", r.status, r.body)
	}
}

// TestAttestedSessionReturnsItsToken: attesting an attested session again
// answers with its token, as Trustee does, whether the session is stored
// or held by the client (whose cookie the attestation set).
func TestAttestedSessionReturnsItsToken(t *testing.T) {
	for _, sessions := range []string{"Memory", SessionsInCookie} {
		t.Run(sessions, func(t *testing.T) {
			k := newKBS(t, baseConfig("@DATA@", "session_storage_type = \""+sessions+"\""))
			k.registerSampleRVs(t)
			nonce, cookie := k.challenge(t, "sample")
			key, _ := jose.GenerateTEEKey("EC")
			body := attestationBody(t, nonce, nonce, key)
			r1 := k.do(t, "POST", "/kbs/v0/attest", body, cookieHdr(cookie))
			if r1.status != 200 {
				t.Fatalf("attest: %d %s", r1.status, r1.body)
			}
			cookie = r1.setCookie()
			// Again, even with another (valid) body: the same token.
			key2, _ := jose.GenerateTEEKey("EC")
			r2 := k.do(t, "POST", "/kbs/v0/attest", attestationBody(t, nonce, nonce, key2), cookieHdr(cookie))
			if r2.status != 200 || !bytes.Equal(r1.body, r2.body) || r2.setCookie() != cookie {
				t.Errorf("second attest: %d %s", r2.status, r2.body)
			}
			// The session's token releases resources with the cookie alone.
			k.srv.resources.policy.Set(bg, ResourcePolicyID, respolicy.Affirming)
			k.srv.resources.store.Put(bg, ResourceNamespace, "default/key/x", []byte("x"))
			r := k.do(t, "GET", "/kbs/v0/resource/default/key/x", nil, cookieHdr(cookie))
			if r.status != 200 {
				t.Fatalf("resource by cookie: %d %s", r.status, r.body)
			}
			var resp protocol.Response
			json.Unmarshal(r.body, &resp)
			if pt, err := key.Decrypt(&resp); err != nil || string(pt) != "x" {
				t.Errorf("decrypt: %v", err)
			}
		})
	}
}

// notCookieAS answers with its inner service's tokens made unfit for a
// cookie's value, as a token that is not a compact JWS would be.
type notCookieAS struct{ attestationService }

func (a notCookieAS) Evaluate(ctx context.Context, reqs []attestation.Request, policyID string) (string, *ear.Claims, error) {
	token, claims, err := a.attestationService.Evaluate(ctx, reqs, policyID)
	return token + "~", claims, err
}

// TestHeldSessionsStoreOtherTokens: where clients hold their sessions, a
// token that cannot be a cookie is stored; the cookie stays the session
// id, re-attesting with it answers with the first token, and it releases.
func TestHeldSessionsStoreOtherTokens(t *testing.T) {
	k := newKBS(t, "")
	k.srv.as = notCookieAS{k.srv.as}
	k.registerSampleRVs(t)
	k.srv.resources.policy.Set(bg, ResourcePolicyID, respolicy.Affirming)
	k.srv.resources.store.Put(bg, ResourceNamespace, "default/key/x", []byte("x"))
	nonce, cookie := k.challenge(t, "sample")
	key, _ := jose.GenerateTEEKey("EC")
	r1 := k.do(t, "POST", "/kbs/v0/attest", attestationBody(t, nonce, nonce, key), cookieHdr(cookie))
	if r1.status != 200 || r1.setCookie() != cookie {
		t.Fatalf("attest: %d %s, cookie %q", r1.status, r1.body, r1.setCookie())
	}
	if _, err := k.srv.store.Get(bg, SessionNamespace, cookie); err != nil {
		t.Fatalf("the session was not stored: %v", err)
	}
	key2, _ := jose.GenerateTEEKey("EC")
	r2 := k.do(t, "POST", "/kbs/v0/attest", attestationBody(t, nonce, nonce, key2), cookieHdr(cookie))
	if r2.status != 200 || !bytes.Equal(r1.body, r2.body) {
		t.Fatalf("second attest: %d %s, want the first token", r2.status, r2.body)
	}
	r := k.do(t, "GET", "/kbs/v0/resource/default/key/x", nil, cookieHdr(cookie))
	var resp protocol.Response
	json.Unmarshal(r.body, &resp)
	if pt, err := key.Decrypt(&resp); r.status != 200 || err != nil || string(pt) != "x" {
		t.Fatalf("resource by the stored session: %d %s, %v", r.status, r.body, err)
	}
}

// badCase is a request that must be refused with a typed error and leave
// the store as it was.
type badCase struct {
	name   string
	method string
	path   string
	body   []byte
	hdr    map[string]string
	status int
	kind   protocol.Kind
}

func (k *testKBS) expectRefused(t *testing.T, cases []badCase) {
	t.Helper()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := snapshot(t, k.srv.store)
			method := c.method
			if method == "" {
				method = "POST"
			}
			r := k.raw(t, method, c.path, c.hdr, string(c.body))
			if r.status != c.status || r.kind() != c.kind {
				t.Errorf("%s %s: %d %s; want %d %s", method, c.path, r.status, r.body, c.status, c.kind)
			}
			if r.status >= 500 {
				t.Errorf("server error %d", r.status)
			}
			if ct := r.header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type %q", ct)
			}
			var info protocol.ErrorInformation
			if json.Unmarshal(r.body, &info) != nil || info.Detail == "" {
				t.Errorf("error body without detail: %s", r.body)
			}
			if after := snapshot(t, k.srv.store); !sameState(before, after) {
				t.Errorf("refused request changed the store")
			}
		})
	}
}

func TestAuthRefusals(t *testing.T) {
	k := newKBS(t, "")
	const auth = "/kbs/v0/auth"
	ra := protocol.KindAttestation
	k.expectRefused(t, []badCase{
		{"empty body", "", auth, nil, nil, 401, ra},
		{"malformed JSON", "", auth, []byte(`{"version":"0.4.0",`), nil, 401, ra},
		{"not an object", "", auth, []byte(`["0.4.0","sample"]`), nil, 401, ra},
		{"trailing data", "", auth, []byte(`{"version":"0.4.0","tee":"sample"} {}`), nil, 401, ra},
		{"trailing brace", "", auth, []byte(`{"version":"0.4.0","tee":"sample"}}`), nil, 401, ra},
		{"trailing bracket", "", auth, []byte(`{"version":"0.4.0","tee":"sample"}]`), nil, 401, ra},
		{"trailing garbage", "", auth, []byte(`{"version":"0.4.0","tee":"sample"} x`), nil, 401, ra},
		{"wrong version", "", auth, []byte(`{"version":"0.3.0","tee":"sample"}`), nil, 401, ra},
		{"version 0.4", "", auth, []byte(`{"version":"0.4","tee":"sample"}`), nil, 401, ra},
		{"no version", "", auth, []byte(`{"tee":"sample"}`), nil, 401, ra},
		{"version not a string", "", auth, []byte(`{"version":0.4,"tee":"sample"}`), nil, 401, ra},
		{"unknown tee", "", auth, []byte(`{"version":"0.4.0","tee":"pentium"}`), nil, 401, ra},
		{"tee upper case", "", auth, []byte(`{"version":"0.4.0","tee":"SNP"}`), nil, 401, ra},
		{"no tee", "", auth, []byte(`{"version":"0.4.0"}`), nil, 401, ra},
		{"GET", "GET", auth, nil, nil, 404, protocol.KindPluginNotFound},
		{"PUT", "PUT", auth, []byte(`{"version":"0.4.0","tee":"sample"}`), nil, 404, protocol.KindPluginNotFound},
		{"path after auth", "", auth + "/x", []byte(`{"version":"0.4.0","tee":"sample"}`), nil, 404, protocol.KindInvalidPath},
	})
}

func TestAttestRefusals(t *testing.T) {
	k := newKBS(t, "")
	k.registerSampleRVs(t)
	const attest = "/kbs/v0/attest"
	key, _ := jose.GenerateTEEKey("EC")
	nonce, cookie := k.challenge(t, "sample")
	nonceB, _ := k.challenge(t, "sample")
	nonceSNP, cookieSNP := k.challenge(t, "snp")
	good := attestationBody(t, nonce, nonce, key)
	ck := cookieHdr(cookie)
	mutate := func(f func(m map[string]any)) []byte {
		var m map[string]any
		json.Unmarshal(good, &m)
		f(m)
		b, _ := json.Marshal(m)
		return b
	}
	rd := func(m map[string]any) map[string]any { return m["runtime-data"].(map[string]any) }
	te := func(m map[string]any) map[string]any { return m["tee-evidence"].(map[string]any) }
	att := protocol.KindAttestation
	k.expectRefused(t, []badCase{
		{"no cookie", "", attest, good, nil, 401, att},
		{"unknown session", "", attest, good, cookieHdr(strings.Repeat("ab", 16)), 401, att},
		{"malformed session id", "", attest, good, cookieHdr("../../etc"), 401, att},
		{"empty session id", "", attest, good, cookieHdr(""), 401, att},
		{"malformed JSON", "", attest, []byte(`{"runtime-data":`), ck, 401, att},
		{"trailing data", "", attest, append(append([]byte{}, good...), []byte(" 1")...), ck, 401, att},
		{"wrong nonce", "", attest, attestationBody(t, "AAAA", "AAAA", key), ck, 401, att},
		{"no nonce", "", attest, mutate(func(m map[string]any) { delete(rd(m), "nonce") }), ck, 401, att},
		// Session B's nonce and evidence replayed in session A.
		{"replayed nonce", "", attest, attestationBody(t, nonceB, nonceB, key), ck, 401, att},
		// The right nonce, with evidence bound to another one.
		{"report data mismatch", "", attest, attestationBody(t, nonce, nonceB, key), ck, 401, att},
		{"evidence for another key", "", attest, mutate(func(m map[string]any) {
			other, _ := jose.GenerateTEEKey("EC")
			b, _ := json.Marshal(other.Public())
			var pk map[string]any
			json.Unmarshal(b, &pk)
			rd(m)["tee-pubkey"] = pk
		}), ck, 401, att},
		{"bad tee-pubkey", "", attest, mutate(func(m map[string]any) {
			rd(m)["tee-pubkey"].(map[string]any)["alg"] = "RSA1_5"
		}), ck, 401, att},
		{"off-curve tee-pubkey", "", attest, mutate(func(m map[string]any) {
			rd(m)["tee-pubkey"].(map[string]any)["y"] = "AQ"
		}), ck, 401, att},
		{"no primary evidence", "", attest, mutate(func(m map[string]any) { delete(te(m), "primary_evidence") }), ck, 401, att},
		{"primary evidence not an object", "", attest, mutate(func(m map[string]any) { te(m)["primary_evidence"] = "x" }), ck, 401, att},
		// Another TEE's evidence is not read as sample evidence with empty claims.
		{"SNP evidence in a sample session", "", attest, mutate(func(m map[string]any) {
			te(m)["primary_evidence"] = map[string]any{"attestation_report": map[string]any{"version": 2}, "cert_chain": nil}
		}), ck, 401, att},
		{"sample evidence with an extra field", "", attest, mutate(func(m map[string]any) {
			te(m)["primary_evidence"].(map[string]any)["launch_digest"] = "forged"
		}), ck, 401, att},
		{"additional evidence not JSON", "", attest, mutate(func(m map[string]any) { te(m)["additional_evidence"] = "{" }), ck, 401, att},
		{"additional evidence unknown tee", "", attest, mutate(func(m map[string]any) { te(m)["additional_evidence"] = `{"gpu9000":{}}` }), ck, 401, att},
		// The additional evidence is bound through the primary evidence's
		// report data: adding it afterwards is a mismatch.
		{"additional evidence added", "", attest, mutate(func(m map[string]any) { te(m)["additional_evidence"] = `{"tdx":{}}` }), ck, 401, att},
		{"init-data format", "", attest, mutate(func(m map[string]any) {
			m["init-data"] = map[string]any{"format": "json", "body": "{}"}
		}), ck, 401, att},
		{"init-data invalid", "", attest, mutate(func(m map[string]any) {
			m["init-data"] = map[string]any{"format": "toml", "body": "version = 1"}
		}), ck, 401, att},
		{"tee without a verifier", "", attest, attestationBody(t, nonceSNP, nonceSNP, key), cookieHdr(cookieSNP), 401, att},
		{"GET", "GET", attest, nil, ck, 404, protocol.KindPluginNotFound},
	})
	// After all that, the session still attests with the right evidence.
	if r := k.do(t, "POST", attest, good, ck); r.status != 200 {
		t.Fatalf("good attestation after refusals: %d %s", r.status, r.body)
	}
	m := k.do(t, "GET", "/metrics", nil, nil)
	if !bytes.Contains(m.body, []byte(`kbs_attestations_total{result="failure",tee="sample"}`)) ||
		!bytes.Contains(m.body, []byte(`kbs_attestations_total{result="success",tee="sample"} 1`)) {
		t.Errorf("attestation metrics:\n%s", grep(m.body, "kbs_attestations_total"))
	}
}

func TestExpiredSession(t *testing.T) {
	k := newKBS(t, baseConfig("@DATA@", "session_storage_type = \"Memory\""))
	k.registerSampleRVs(t)
	key, _ := jose.GenerateTEEKey("EC")
	late := func() time.Time { return time.Now().Add(time.Hour) }
	nonce, cookie := k.challenge(t, "sample")
	k.srv.sessions.now = late
	r := k.do(t, "POST", "/kbs/v0/attest", attestationBody(t, nonce, nonce, key), cookieHdr(cookie))
	if r.status != 401 || r.kind() != protocol.KindAttestation || !strings.Contains(string(r.body), "expired") {
		t.Errorf("expired session: %d %s", r.status, r.body)
	}
	// An attested session that expires is deleted when next used.
	k.srv.sessions.now = time.Now
	nonce, cookie = k.challenge(t, "sample")
	if r := k.do(t, "POST", "/kbs/v0/attest", attestationBody(t, nonce, nonce, key), cookieHdr(cookie)); r.status != 200 {
		t.Fatalf("attest: %d %s", r.status, r.body)
	}
	k.srv.sessions.now = late
	if _, _, err := k.srv.sessions.get(bg, cookie); !errors.Is(err, ErrSessionExpired) {
		t.Errorf("expired attested session: %v", err)
	}
	if _, err := k.srv.store.Get(bg, SessionNamespace, cookie); err == nil {
		t.Error("expired session not deleted")
	}
}

// TestForgedSessionID: a client cannot extend its session or change its
// TEE by editing the cookie: the nonce no longer matches.
func TestForgedSessionID(t *testing.T) {
	k := newKBS(t, "")
	k.registerSampleRVs(t)
	key, _ := jose.GenerateTEEKey("EC")
	nonce, cookie := k.challenge(t, "sample")
	id, _ := hex.DecodeString(cookie)
	id[1]++ // a later expiry
	forged := hex.EncodeToString(id)
	r := k.do(t, "POST", "/kbs/v0/attest", attestationBody(t, nonce, nonce, key), cookieHdr(forged))
	if r.status != 401 || !strings.Contains(string(r.body), "nonce") {
		t.Errorf("forged expiry: %d %s", r.status, r.body)
	}
	for _, bad := range []string{strings.Repeat("ff", 16), "00", "zz" + cookie[2:]} {
		r := k.do(t, "POST", "/kbs/v0/attest", attestationBody(t, nonce, nonce, key), cookieHdr(bad))
		if r.status != 401 || !strings.Contains(string(r.body), "not found") {
			t.Errorf("cookie %s: %d %s", bad, r.status, r.body)
		}
	}
}

func TestSessionClock(t *testing.T) {
	// The session store's own clock: a session lives for the timeout.
	k := newKBS(t, baseConfig("@DATA@", "session_storage_type = \"Memory\"")+"\n[attestation_service]\ntimeout = 1\n")
	now := time.Now().Truncate(time.Second)
	k.srv.sessions.now = func() time.Time { return now }
	_, cookie := k.challenge(t, "sample")
	if _, err := issued(k.srv.sessions, cookie); err != nil {
		t.Fatal(err)
	}
	now = now.Add(59 * time.Second)
	if _, err := issued(k.srv.sessions, cookie); err != nil {
		t.Errorf("after 59 s: %v", err)
	}
	now = now.Add(time.Second)
	if _, err := issued(k.srv.sessions, cookie); !errors.Is(err, ErrSessionExpired) {
		t.Errorf("after 60 s: %v, want ErrSessionExpired", err)
	}
	// The sweeper deletes expired attested sessions only.
	start := now
	attested := func() string {
		_, id := k.challenge(t, "sample")
		c, err := issued(k.srv.sessions, id)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := k.srv.sessions.attested(bg, c, "token"); err != nil {
			t.Fatal(err)
		}
		return id
	}
	old := attested() // expires at start+60s
	now = start.Add(50 * time.Second)
	live := attested() // expires at start+110s
	now = start.Add(70 * time.Second)
	n, err := k.srv.sessions.sweep(bg)
	if err != nil || n != 1 {
		t.Errorf("sweep = %d, %v; want 1", n, err)
	}
	if _, err := k.srv.store.Get(bg, SessionNamespace, old); err == nil {
		t.Error("expired session not swept")
	}
	if _, sess, err := k.srv.sessions.get(bg, live); err != nil || sess == nil {
		t.Errorf("live session swept: %v", err)
	}
}

func TestResourceRefusals(t *testing.T) {
	k := newKBS(t, "")
	k.registerSampleRVs(t)
	k.srv.resources.policy.Set(bg, ResourcePolicyID, respolicy.Affirming)
	k.srv.resources.store.Put(bg, ResourceNamespace, "default/key/x", []byte("x"))
	c := k.newClient(t)
	tok, err := c.Attest(bg)
	if err != nil {
		t.Fatal(err)
	}
	bearer := func(tok string) map[string]string { return map[string]string{"Authorization": "Bearer " + tok} }
	signer := k.srv.builtin.Signer()
	claims, _, _ := k.srv.tokens.Verify(tok)

	// A token signed by another key, with the same claims.
	fk, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	fs, _ := ear.NewSigner(fk, nil)
	forged, _ := fs.Sign(claims)
	// An expired token, signed by the KBS's own key.
	old := *claims
	old.IssuedAt, old.Expiry = time.Now().Add(-time.Hour).Unix(), time.Now().Add(-10*time.Minute).Unix()
	expired, _ := signer.Sign(&old)
	// A token from the future.
	future := *claims
	future.IssuedAt, future.Expiry = time.Now().Add(time.Hour).Unix(), time.Now().Add(2*time.Hour).Unix()
	early, _ := signer.Sign(&future)
	// A valid token of a contraindicated appraisal.
	bad := *claims
	bad.Submods = map[string]ear.Appraisal{"cpu0": {Status: ear.StatusContraindicated, AnnotatedEvidence: claims.Submods["cpu0"].AnnotatedEvidence}}
	contra, _ := signer.Sign(&bad)
	// A valid affirming token without a tee-pubkey.
	nokey := *claims
	nokey.Submods = map[string]ear.Appraisal{"cpu0": {Status: ear.StatusAffirming}}
	keyless, _ := signer.Sign(&nokey)
	// An affirming token whose tee-pubkey is unusable.
	weak := *claims
	ae := map[string]json.RawMessage{"runtime_data_claims": json.RawMessage(`{"tee-pubkey":{"kty":"RSA","alg":"RSA-OAEP-256","n":"AQAB","e":"AQAB"}}`)}
	weak.Submods = map[string]ear.Appraisal{"cpu0": {Status: ear.StatusAffirming, AnnotatedEvidence: ae}}
	weakKey, _ := signer.Sign(&weak)
	_, unattested := k.challenge(t, "sample")

	const res = "/kbs/v0/resource/default/key/x"
	tv, inv, pie := protocol.KindTokenVerifier, protocol.KindInvalidPath, protocol.KindPluginInternal
	k.expectRefused(t, []badCase{
		{"no token", "GET", res, nil, nil, 401, protocol.KindTokenNotFound},
		{"unattested session", "GET", res, nil, cookieHdr(unattested), 401, protocol.KindTokenNotFound},
		{"empty bearer", "GET", res, nil, map[string]string{"Authorization": "Bearer "}, 401, protocol.KindTokenNotFound},
		{"basic auth", "GET", res, nil, map[string]string{"Authorization": "Basic YTpi"}, 401, protocol.KindTokenNotFound},
		{"garbage bearer", "GET", res, nil, bearer("garbage"), 401, tv},
		{"forged token", "GET", res, nil, bearer(forged), 401, tv},
		{"expired token", "GET", res, nil, bearer(expired), 401, tv},
		{"token from the future", "GET", res, nil, bearer(early), 401, tv},
		{"flipped signature", "GET", res, nil, bearer(tok[:len(tok)-3] + flip(tok[len(tok)-3:])), 401, tv},
		{"contraindicated", "GET", res, nil, bearer(contra), 401, protocol.KindPolicyDeny},
		{"no tee-pubkey", "GET", res, nil, bearer(keyless), 401, tv},
		{"unusable tee-pubkey", "GET", res, nil, bearer(weakKey), 401, protocol.KindJwe},
		{"not found", "GET", "/kbs/v0/resource/default/key/nothere", nil, bearer(tok), 401, protocol.KindPluginInternal},
		{"dot dot", "GET", "/kbs/v0/resource/../key/x", nil, bearer(tok), 404, inv},
		{"dot dot middle", "GET", "/kbs/v0/resource/default/../x", nil, bearer(tok), 404, inv},
		{"dot dot encoded", "GET", "/kbs/v0/resource/%2e%2e/key/x", nil, bearer(tok), 404, inv},
		{"dot dot encoded upper", "GET", "/kbs/v0/resource/default/%2E%2E/x", nil, bearer(tok), 404, inv},
		{"dot", "GET", "/kbs/v0/resource/default/./x", nil, bearer(tok), 404, inv},
		{"dot encoded", "GET", "/kbs/v0/resource/default/key/%2e", nil, bearer(tok), 404, inv},
		{"two segments", "GET", "/kbs/v0/resource/default/key", nil, bearer(tok), 401, pie},
		{"four segments", "GET", "/kbs/v0/resource/default/key/x/y", nil, bearer(tok), 401, pie},
		{"trailing dot dot", "GET", "/kbs/v0/resource/default/key/x/..", nil, bearer(tok), 404, inv},
		{"empty segment", "GET", "/kbs/v0/resource/default//x", nil, bearer(tok), 404, inv},
		{"encoded slash", "GET", "/kbs/v0/resource/default/key%2fx/y", nil, bearer(tok), 404, inv},
		{"no path", "GET", "/kbs/v0/resource", nil, bearer(tok), 401, pie},
		{"space", "GET", "/kbs/v0/resource/default/key/a%20b", nil, bearer(tok), 401, pie},
		{"leading dot", "GET", "/kbs/v0/resource/.hidden/key/x", nil, bearer(tok), 401, pie},
		{"unknown plugin", "GET", "/kbs/v0/secrets/default/key/x", nil, bearer(tok), 404, protocol.KindPluginNotFound},
		{"dot dot plugin", "GET", "/kbs/v0/../metrics", nil, nil, 404, inv},
		{"empty endpoint", "GET", "/kbs/v0/", nil, nil, 404, inv},
		{"PATCH", "PATCH", res, nil, bearer(tok), 405, protocol.KindMethodNotAllowed},
	})
	// The good token still works after all that.
	if got, err := c.GetResource(bg, "default/key/x"); err != nil || string(got) != "x" {
		t.Errorf("good token: %q, %v", got, err)
	}
}

func flip(s string) string {
	if s[0] == 'A' {
		return "B" + s[1:]
	}
	return "A" + s[1:]
}

func TestPolicyQueryAndPath(t *testing.T) {
	k := newKBS(t, "")
	k.registerSampleRVs(t)
	pol := `package policy
import rego.v1
default allow := false
allow if {
	data.plugin == "resource"
	data["resource-path"] == ["default", "key", "x"]
	data.query.version == "2"
	input.submods.cpu0["ear.status"] == "affirming"
}
`
	if err := k.srv.resources.policy.Set(bg, ResourcePolicyID, pol); err != nil {
		t.Fatal(err)
	}
	k.srv.resources.store.Put(bg, ResourceNamespace, "default/key/x", []byte("x"))
	k.srv.resources.store.Put(bg, ResourceNamespace, "default/key/y", []byte("y"))
	c := k.newClient(t)
	if _, err := c.Attest(bg); err != nil {
		t.Fatal(err)
	}
	if got, err := c.GetResource(bg, "default/key/x?version=2"); err != nil || string(got) != "x" {
		t.Errorf("allowed by query: %q, %v", got, err)
	}
	var kerr *protocol.Error
	for _, p := range []string{"default/key/x", "default/key/x?version=1", "default/key/y?version=2"} {
		if _, err := c.GetResource(bg, p); !errors.As(err, &kerr) || kerr.Kind != protocol.KindPolicyDeny {
			t.Errorf("%s: %v, want PolicyDeny", p, err)
		}
	}
	// A policy that does not produce a boolean denies.
	k.srv.resources.policy.Set(bg, ResourcePolicyID, "package policy\nimport rego.v1\nallow := \"yes\"\n")
	if _, err := c.GetResource(bg, "default/key/x"); !errors.As(err, &kerr) || kerr.Kind != protocol.KindPolicyDeny {
		t.Errorf("string allow: %v, want PolicyDeny", err)
	}
	// A policy that fails to evaluate is a policy engine error, not a 500.
	k.srv.resources.policy.Set(bg, ResourcePolicyID, "package policy\nimport rego.v1\nallow if to_number(\"x\") > 1\n")
	r := k.do(t, "GET", "/kbs/v0/resource/default/key/x", nil, map[string]string{"Authorization": "Bearer " + mustToken(t, c)})
	if r.status != 401 || r.kind() != protocol.KindPolicyEngine {
		t.Errorf("failing policy: %d %s", r.status, r.body)
	}
}

func mustToken(t *testing.T, c *client.Client) string {
	t.Helper()
	tok, err := c.Attest(bg)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func TestOversizeBody(t *testing.T) {
	k := newKBS(t, baseConfig("@DATA@", "")+"\n")
	k.srv.cfg.HTTPServer.PayloadRequestSize = 1 // MiB
	big := bytes.Repeat([]byte(" "), 1<<20+10)
	copy(big, `{"version":"0.4.0","tee":"sample"}`)
	tok := k.adminToken(t, AdminRole, time.Minute)
	k.expectRefused(t, []badCase{
		{"auth", "", "/kbs/v0/auth", big, nil, 413, protocol.KindPayloadTooLarge},
		{"attest", "", "/kbs/v0/attest", big, nil, 401, protocol.KindAttestation}, // no session: refused before reading
		{"resource", "", "/kbs/v0/resource/default/key/big", big, map[string]string{"Authorization": "Bearer " + tok}, 413, protocol.KindPayloadTooLarge},
		{"reference value", "", "/kbs/v0/reference-value", big, map[string]string{"Authorization": "Bearer " + tok}, 413, protocol.KindPayloadTooLarge},
		{"resource policy", "", "/kbs/v0/resource-policy", big, map[string]string{"Authorization": "Bearer " + tok}, 413, protocol.KindPayloadTooLarge},
	})
	// Just under the limit passes the size check.
	_, cookie := k.challenge(t, "sample")
	body := bytes.Repeat([]byte(" "), 1<<20-100)
	copy(body, `{}`)
	if r := k.do(t, "POST", "/kbs/v0/attest", body, cookieHdr(cookie)); r.status == 413 {
		t.Errorf("body under the limit refused as too large")
	}
	// With a session, an oversize attestation is 413 too.
	if r := k.do(t, "POST", "/kbs/v0/attest", big, cookieHdr(cookie)); r.status != 413 || r.kind() != protocol.KindPayloadTooLarge {
		t.Errorf("oversize attest: %d %s", r.status, r.body)
	}
	// A resource over MaxResourceSize with a larger request limit.
	k.srv.cfg.HTTPServer.PayloadRequestSize = 4
	if r := k.do(t, "POST", "/kbs/v0/resource/default/key/big", bytes.Repeat([]byte("x"), MaxResourceSize+1),
		map[string]string{"Authorization": "Bearer " + tok}); r.status != 413 {
		t.Errorf("resource over MaxResourceSize: %d %s", r.status, r.body)
	}
	if _, err := k.srv.store.Get(bg, ResourceNamespace, "default/key/big"); err == nil {
		t.Error("oversize resource stored")
	}
}

// TestConcurrentAttestSameSession: racing attestations of one session all
// answer with the one token the session keeps.
func TestConcurrentAttestSameSession(t *testing.T) {
	k := newKBS(t, baseConfig("@DATA@", "session_storage_type = \"Memory\""))
	k.registerSampleRVs(t)
	nonce, cookie := k.challenge(t, "sample")
	key, _ := jose.GenerateTEEKey("EC")
	body := attestationBody(t, nonce, nonce, key)
	const n = 8
	bodies := make(chan string, n)
	for range n {
		go func() {
			rec := serve(k.srv, "POST", "/kbs/v0/attest", body, cookie)
			if rec.Code != 200 {
				bodies <- fmt.Sprintf("status %d %s", rec.Code, rec.Body)
				return
			}
			bodies <- rec.Body.String()
		}()
	}
	first := <-bodies
	for range n - 1 {
		if b := <-bodies; b != first {
			t.Errorf("answers differ:\n%s\n%s", first, b)
		}
	}
	var at protocol.AttestationToken
	if err := json.Unmarshal([]byte(first), &at); err != nil || at.Token == "" {
		t.Fatalf("answer %s", first)
	}
	_, sess, err := k.srv.sessions.get(bg, cookie)
	if err != nil || sess.Token != at.Token {
		t.Errorf("session keeps another token: %v", err)
	}
}

// TestStoredSessionFormats: a session is stored as its token; one stored
// by an earlier version as {"token": ...} still reads, and a second
// attestation of a session keeps the first token.
func TestStoredSessionFormats(t *testing.T) {
	k := newKBS(t, baseConfig("@DATA@", "session_storage_type = \"Memory\""))
	k.registerSampleRVs(t)
	tok := mustAttestDirect(t, k)
	ids, _ := k.srv.store.List(bg, SessionNamespace)
	if len(ids) != 1 {
		t.Fatalf("sessions %v", ids)
	}
	if b, _ := k.srv.store.Get(bg, SessionNamespace, ids[0]); string(b) != tok {
		t.Errorf("stored session %.40q, want the token", b)
	}
	c, err := issued(k.srv.sessions, ids[0])
	if err != nil {
		t.Fatal(err)
	}
	if got, err := k.srv.sessions.attested(bg, c, "another"); err != nil || got.Token != tok {
		t.Errorf("second attestation: %v %v", got, err)
	}
	old, _ := json.Marshal(map[string]string{"token": tok})
	k.srv.store.Put(bg, SessionNamespace, ids[0], old)
	if _, sess, err := k.srv.sessions.get(bg, ids[0]); err != nil || sess.Token != tok {
		t.Errorf("session stored as JSON: %v %v", sess, err)
	}
}
