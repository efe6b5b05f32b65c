package restful

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	gojose "github.com/go-jose/go-jose/v4"

	"github.com/cocoon-cc/cocoon/attestation"
	"github.com/cocoon-cc/cocoon/attestation/ear"
	"github.com/cocoon-cc/cocoon/attestation/verifier"
	"github.com/cocoon-cc/cocoon/attestation/verifier/sample"
	"github.com/cocoon-cc/cocoon/protocol"
	"github.com/cocoon-cc/cocoon/rvps"
	"github.com/cocoon-cc/cocoon/store/memory"
)

// bearer authorizes requests carrying "Bearer ok".
type bearer struct{}

func (bearer) Authorize(r *http.Request) (string, error) {
	if r.Header.Get("Authorization") != "Bearer ok" {
		return "", errBadRequest
	}
	return "tester", nil
}

type fixture struct {
	srv    *httptest.Server
	signer *ear.Signer
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	ctx := context.Background()
	st := memory.New()
	rv := rvps.New(st)
	pols, err := attestation.NewPolicies(ctx, st, rv)
	if err != nil {
		t.Fatal(err)
	}
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	signer, _ := ear.NewSigner(k, nil)
	as := attestation.New(verifier.Registry{protocol.TeeSample: sample.Verifier{}}, pols, signer, attestation.Config{})
	srv := httptest.NewServer(NewServer(as, rv, bearer{}, slog.New(slog.NewTextHandler(io.Discard, nil))).Handler())
	t.Cleanup(srv.Close)
	return &fixture{srv: srv, signer: signer}
}

func (f *fixture) do(t *testing.T, method, path, auth string, body any) (int, []byte) {
	t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	default:
		raw, _ := json.Marshal(b)
		rd = bytes.NewReader(raw)
	}
	req, _ := http.NewRequest(method, f.srv.URL+path, rd)
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, out
}

// sampleRequest is a verification request whose evidence is bound to
// structured runtime data.
func sampleRequest(t *testing.T) protocol.ASVerificationRequest {
	rd := map[string]any{"nonce": "n", "tee-pubkey": map[string]any{"kty": "EC"}}
	digest, err := protocol.ReportData(rd)
	if err != nil {
		t.Fatal(err)
	}
	ev, _ := json.Marshal(map[string]string{"svn": "1", "report_data": base64.StdEncoding.EncodeToString(digest)})
	structured, _ := json.Marshal(rd)
	return protocol.ASVerificationRequest{Tee: "sample", Evidence: base64.RawURLEncoding.EncodeToString(ev),
		RuntimeData: &protocol.ASRuntimeData{Structured: structured}}
}

func TestAttestationIssuesAVerifiableToken(t *testing.T) {
	f := newFixture(t)
	code, body := f.do(t, http.MethodPost, "/attestation", "",
		protocol.ASAttestationRequest{VerificationRequests: []protocol.ASVerificationRequest{sampleRequest(t)}})
	if code != http.StatusOK {
		t.Fatalf("attestation: %d %s", code, body)
	}
	v := ear.NewVerifier(ear.VerifierOptions{Keys: []gojose.JSONWebKey{f.signer.Public()}})
	claims, _, err := v.Verify(string(body))
	if err != nil {
		t.Fatalf("token: %v", err)
	}
	if _, ok := claims.Submods["cpu0"]; !ok {
		t.Fatalf("no cpu0 appraisal: %+v", claims)
	}
	// The published JWKS carries the signing key.
	code, body = f.do(t, http.MethodGet, "/.well-known/jwks.json", "", nil)
	if code != http.StatusOK || !strings.Contains(string(body), `"kty":"EC"`) {
		t.Fatalf("jwks: %d %s", code, body)
	}
}

func TestBadRequestsAre400(t *testing.T) {
	f := newFixture(t)
	good := sampleRequest(t)
	mismatch := good
	mismatch.RuntimeData = &protocol.ASRuntimeData{Structured: json.RawMessage(`{"nonce":"other"}`)}
	for name, body := range map[string]any{
		"not JSON":         "{",
		"no requests":      protocol.ASAttestationRequest{},
		"unknown tee":      protocol.ASAttestationRequest{VerificationRequests: []protocol.ASVerificationRequest{{Tee: "nope", Evidence: good.Evidence}}},
		"evidence not b64": protocol.ASAttestationRequest{VerificationRequests: []protocol.ASVerificationRequest{{Tee: "sample", Evidence: "!!"}}},
		"report mismatch":  protocol.ASAttestationRequest{VerificationRequests: []protocol.ASVerificationRequest{mismatch}},
		"bad hash":         protocol.ASAttestationRequest{VerificationRequests: []protocol.ASVerificationRequest{{Tee: "sample", Evidence: good.Evidence, RuntimeData: good.RuntimeData, RuntimeDataHashAlgorithm: "md5"}}},
	} {
		if code, out := f.do(t, http.MethodPost, "/attestation", "", body); code != http.StatusBadRequest ||
			!strings.Contains(string(out), `"error"`) {
			t.Errorf("%s: %d %s, want 400 with an error", name, code, out)
		}
	}
	if code, _ := f.do(t, http.MethodPost, "/attestation", "", strings.Repeat("x", MaxBody+1)); code != http.StatusRequestEntityTooLarge {
		t.Errorf("oversize body: %d, want 413", code)
	}
}

func TestAdminEndpoints(t *testing.T) {
	f := newFixture(t)
	policy := base64.RawURLEncoding.EncodeToString([]byte("package policy\n\ntrust_claims := {\"executables\": 3}\n"))
	set := protocol.ASSetPolicyRequest{PolicyID: "mine_cpu", Policy: policy}
	if code, _ := f.do(t, http.MethodPost, "/policy", "", set); code != http.StatusUnauthorized {
		t.Fatalf("unauthenticated set policy: %d", code)
	}
	if code, out := f.do(t, http.MethodPost, "/policy", "Bearer ok", set); code != http.StatusOK {
		t.Fatalf("set policy: %d %s", code, out)
	}
	bad := protocol.ASSetPolicyRequest{PolicyID: "bad_cpu", Policy: base64.RawURLEncoding.EncodeToString([]byte("package other"))}
	if code, _ := f.do(t, http.MethodPost, "/policy", "Bearer ok", bad); code != http.StatusBadRequest {
		t.Fatalf("invalid policy: %d", code)
	}
	code, out := f.do(t, http.MethodGet, "/policy", "Bearer ok", nil)
	var ids map[string]string
	if code != http.StatusOK || json.Unmarshal(out, &ids) != nil || ids["mine_cpu"] == "" || ids["bad_cpu"] != "" {
		t.Fatalf("list policies: %d %s", code, out)
	}
	// The new policy is used when a request names it.
	req := protocol.ASAttestationRequest{VerificationRequests: []protocol.ASVerificationRequest{sampleRequest(t)}, PolicyIDs: []string{"mine"}}
	if code, out := f.do(t, http.MethodPost, "/attestation", "", req); code != http.StatusOK {
		t.Fatalf("attestation under the new policy: %d %s", code, out)
	}

	msg := rvps.Message{Version: rvps.MessageVersion, Type: "sample", Payload: base64.StdEncoding.EncodeToString([]byte(`{"svn":["1"]}`))}
	if code, _ := f.do(t, http.MethodPost, "/reference-value", "", msg); code != http.StatusUnauthorized {
		t.Fatalf("unauthenticated reference value: %d", code)
	}
	if code, out := f.do(t, http.MethodPost, "/reference-value", "Bearer ok", msg); code != http.StatusOK {
		t.Fatalf("register: %d %s", code, out)
	}
	if code, out := f.do(t, http.MethodGet, "/reference-value/svn", "Bearer ok", nil); code != http.StatusOK || string(out) != `["1"]` {
		t.Fatalf("query: %d %s", code, out)
	}
	if code, out := f.do(t, http.MethodGet, "/reference-value/none", "Bearer ok", nil); code != http.StatusOK || string(out) != "null" {
		t.Fatalf("query missing: %d %s", code, out)
	}
}

func TestChallenge(t *testing.T) {
	f := newFixture(t)
	code, out := f.do(t, http.MethodPost, "/challenge", "", map[string]string{"tee": "snp", "tee_params": ""})
	if n, err := base64.StdEncoding.DecodeString(string(out)); code != http.StatusOK || err != nil || len(n) != 32 {
		t.Fatalf("challenge: %d %q", code, out)
	}
	if code, _ := f.do(t, http.MethodPost, "/challenge", "", map[string]string{"tee": "nope"}); code != http.StatusBadRequest {
		t.Fatalf("unknown tee: %d", code)
	}
}

// FuzzRequests feeds arbitrary attestation request bodies to the parser:
// never a panic, and an error for anything it cannot use.
func FuzzRequests(f *testing.F) {
	good, _ := json.Marshal(protocol.ASAttestationRequest{VerificationRequests: []protocol.ASVerificationRequest{{
		Tee: "sample", Evidence: base64.RawURLEncoding.EncodeToString([]byte(`{"svn":"1"}`)),
		RuntimeData: &protocol.ASRuntimeData{Structured: json.RawMessage(`{"nonce":"n"}`)}}}})
	f.Add(good)
	f.Add([]byte(`{"verification_requests":[{"tee":"tdx","evidence":"e30","init_data":{"init_data_digest":"AAEC"}}]}`))
	f.Add([]byte(`{"verification_requests":[{"tee":"snp","evidence":"e30","runtime_data":{"raw":"AAEC"}}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var req protocol.ASAttestationRequest
		if json.Unmarshal(b, &req) != nil {
			return
		}
		reqs, err := Requests(req.VerificationRequests)
		if err == nil && len(reqs) != len(req.VerificationRequests) {
			t.Fatalf("%d requests from %d", len(reqs), len(req.VerificationRequests))
		}
	})
}
