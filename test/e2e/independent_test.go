package e2e

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha512"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/cookiejar"
	"strings"
	"testing"

	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwe"
	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/lestrrat-go/jwx/v3/jws"
)

// independentClient speaks the KBS protocol from its wire description
// only: plain net/http, JSON built by hand, and a third-party JOSE library
// (lestrrat-go/jwx) for keys, the JWE and the token. It shares no code with
// Cocoon's client.
type independentClient struct {
	url  string
	http *http.Client
	key  crypto.PrivateKey
	jwk  map[string]string
}

func newIndependentClient(t *testing.T, url, kind string) *independentClient {
	t.Helper()
	jar, _ := cookiejar.New(nil)
	c := &independentClient{url: url, http: &http.Client{Jar: jar}}
	var err error
	switch kind {
	case "P-256":
		c.key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case "P-521":
		c.key, err = ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
	case "RSA":
		c.key, err = rsa.GenerateKey(rand.Reader, 2048)
	}
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// pubJWK is the tee-pubkey: exported by jwx, reduced to the protocol's members.
func (c *independentClient) pubJWK(t *testing.T) map[string]string {
	k, err := jwk.Import(c.key)
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := k.PublicKey()
	raw, _ := json.Marshal(pub)
	var m map[string]string
	json.Unmarshal(raw, &m)
	out := map[string]string{"kty": m["kty"]}
	if m["kty"] == "EC" {
		out["alg"], out["crv"], out["x"], out["y"] = "ECDH-ES+A256KW", m["crv"], m["x"], m["y"]
	} else {
		out["alg"], out["n"], out["e"] = "RSA-OAEP-256", m["n"], m["e"]
	}
	return out
}

func (c *independentClient) post(t *testing.T, path string, body any) (int, []byte) {
	t.Helper()
	b, _ := json.Marshal(body)
	resp, err := c.http.Post(c.url+path, "application/json", bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, out
}

// attest runs auth + attest with sample evidence and returns the token.
func (c *independentClient) attest(t *testing.T) string {
	t.Helper()
	code, body := c.post(t, "/kbs/v0/auth", map[string]any{"version": "0.4.0", "tee": "sample", "extra-params": map[string]any{}})
	if code != 200 {
		t.Fatalf("auth: %d %s", code, body)
	}
	var ch struct {
		Nonce string `json:"nonce"`
	}
	json.Unmarshal(body, &ch)
	if n, err := base64.StdEncoding.DecodeString(ch.Nonce); err != nil || len(n) != 32 {
		t.Fatalf("nonce %q is not 32 bytes of standard base64", ch.Nonce)
	}
	c.jwk = c.pubJWK(t)
	// RFC 8785 for an object of strings is Go's sorted-key encoding.
	canon, _ := json.Marshal(map[string]any{"additional-evidence": "", "nonce": ch.Nonce, "tee-pubkey": c.jwk})
	digest := sha512.Sum384(canon)
	att := map[string]any{
		"runtime-data": map[string]any{"nonce": ch.Nonce, "tee-pubkey": c.jwk},
		"tee-evidence": map[string]any{
			"primary_evidence":    map[string]string{"svn": "1", "report_data": base64.StdEncoding.EncodeToString(digest[:])},
			"additional_evidence": "",
		},
	}
	code, body = c.post(t, "/kbs/v0/attest", att)
	if code != 200 {
		t.Fatalf("attest: %d %s", code, body)
	}
	var tok struct {
		Token string `json:"token"`
	}
	json.Unmarshal(body, &tok)
	return tok.Token
}

func (c *independentClient) fetch(t *testing.T, path, bearer string) (int, []byte) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, c.url+"/kbs/v0/resource/"+path, nil)
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

func (c *independentClient) getResource(t *testing.T, path string) []byte {
	t.Helper()
	return c.open(t, path, "")
}

func (c *independentClient) getResourceBearer(t *testing.T, token, path string) []byte {
	t.Helper()
	return c.open(t, path, token)
}

// open fetches a resource and decrypts its JWE with jwx.
func (c *independentClient) open(t *testing.T, path, bearer string) []byte {
	t.Helper()
	code, body := c.fetch(t, path, bearer)
	if code != 200 {
		t.Fatalf("resource %s: %d %s", path, code, body)
	}
	var flat map[string]string
	if err := json.Unmarshal(body, &flat); err != nil {
		t.Fatalf("resource answer is not a flattened JWE: %s", body)
	}
	for _, k := range []string{"protected", "encrypted_key", "iv", "ciphertext", "tag"} {
		if flat[k] == "" {
			t.Fatalf("JWE member %s missing: %s", k, body)
		}
	}
	hdr, _ := base64.RawURLEncoding.DecodeString(flat["protected"])
	var h map[string]any
	json.Unmarshal(hdr, &h)
	if h["enc"] != "A256GCM" || h["alg"] != c.jwk["alg"] {
		t.Fatalf("protected header %s", hdr)
	}
	alg := jwa.ECDH_ES_A256KW()
	if c.jwk["kty"] == "RSA" {
		alg = jwa.RSA_OAEP_256()
	}
	plain, err := jwe.Decrypt(body, jwe.WithKey(alg, c.key))
	if err != nil {
		t.Fatalf("jwx cannot decrypt the KBS's JWE: %v", err)
	}
	return plain
}

func TestIndependentClient(t *testing.T) {
	data := t.TempDir()
	cfg, url := kbsConfig(t, data, "http", "")
	k := startKBS(t, cfg, url, data, nil)
	provisionSample(t, url, k.adminKey())
	setResource(t, []string{"--url", url}, k.adminKey(), "default/key/ind", []byte("independent"))

	for _, kind := range []string{"P-256", "P-521", "RSA"} {
		t.Run(kind, func(t *testing.T) {
			c := newIndependentClient(t, url, kind)
			token := c.attest(t)
			verifyToken(t, url, token, c.jwk)
			if got := c.getResource(t, "default/key/ind"); string(got) != "independent" {
				t.Fatalf("cookie fetch = %q", got)
			}
			fresh := newIndependentClient(t, url, kind)
			fresh.key, fresh.jwk = c.key, c.jwk
			if got := fresh.getResourceBearer(t, token, "default/key/ind"); string(got) != "independent" {
				t.Fatalf("bearer fetch = %q", got)
			}
		})
	}
}

// verifyToken checks the EAR token with jwx against the KBS's published JWKS.
func verifyToken(t *testing.T, url, token string, teePub map[string]string) {
	t.Helper()
	resp, err := http.Get(url + "/.well-known/jwks.json")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	set, err := jwk.Parse(body)
	if err != nil || set.Len() != 1 {
		t.Fatalf("jwks: %v %s", err, body)
	}
	key, _ := set.Key(0)
	payload, err := jws.Verify([]byte(token), jws.WithKey(jwa.ES256(), key))
	if err != nil {
		t.Fatalf("jwx cannot verify the EAR token: %v", err)
	}
	var claims struct {
		Profile string `json:"eat_profile"`
		Submods map[string]struct {
			Status    string                     `json:"ear.status"`
			Annotated map[string]json.RawMessage `json:"ear.veraison.annotated-evidence"`
		} `json:"submods"`
	}
	json.Unmarshal(payload, &claims)
	cpu := claims.Submods["cpu0"]
	if claims.Profile != "tag:github.com,2024:confidential-containers/Trustee" || cpu.Status != "affirming" {
		t.Fatalf("token claims: %s", payload)
	}
	var rd struct {
		TeePubKey map[string]string `json:"tee-pubkey"`
	}
	json.Unmarshal(cpu.Annotated["runtime_data_claims"], &rd)
	for k, v := range teePub {
		if rd.TeePubKey[k] != v {
			t.Fatalf("token's tee-pubkey %v, sent %v", rd.TeePubKey, teePub)
		}
	}
	if !strings.Contains(string(cpu.Annotated["sample"]), `"launch_digest"`) {
		t.Fatalf("annotated evidence lacks the sample claims: %s", payload)
	}
}
