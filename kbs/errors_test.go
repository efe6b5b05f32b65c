package kbs

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/cocoon-cc/cocoon/attestation/ear"
	"github.com/cocoon-cc/cocoon/protocol"
)

// errCase is a request and the error Trustee's KBS answers it with
// (kbs/src/error.rs: the variant's name as the type; 404 for
// InvalidRequestPath and PluginNotFound, 401 for the rest), or Cocoon's
// for what Trustee leaves to its HTTP framework.
type errCase struct {
	name   string
	method string
	path   string
	body   []byte
	hdr    map[string]string
	status int
	kind   protocol.Kind
	detail string // a part of the detail, if any
}

func (k *testKBS) expectErrors(t *testing.T, cases []errCase) {
	t.Helper()
	for _, c := range cases {
		t.Run(string(c.kind)+"/"+c.name, func(t *testing.T) {
			r := k.raw(t, c.method, c.path, c.hdr, string(c.body))
			var info protocol.ErrorInformation
			json.Unmarshal(r.body, &info)
			if r.status != c.status || r.kind() != c.kind || !strings.Contains(info.Detail, c.detail) {
				t.Errorf("%s %s: %d %s; want %d %s %q", c.method, c.path, r.status, r.body, c.status, c.kind, c.detail)
			}
		})
	}
}

// resourcePolicy releases to affirming tokens and fails to evaluate for
// the query conflict=1 (two values for allow).
const resourcePolicy = `package policy
import rego.v1
default allow := false
allow if input.submods.cpu0["ear.status"] == "affirming"
allow := false if data.query.conflict == "1"
`

// TestTrusteeErrorTypes sends each kind of bad request to a KBS and checks
// the type and status of the answer.
func TestTrusteeErrorTypes(t *testing.T) {
	k := newKBS(t, "")
	k.srv.cfg.HTTPServer.PayloadRequestSize = 1 // MiB
	admin := bearerHdr(k.adminToken(t, AdminRole, time.Minute))
	if r := k.do(t, "POST", "/kbs/v0/resource-policy", policyBody(t, resourcePolicy, nil), admin); r.status != 200 {
		t.Fatalf("set resource policy: %d %s", r.status, r.body)
	}
	k.srv.resources.store.Put(bg, ResourceNamespace, "default/key/x", []byte("x"))

	// No reference values: a real sample token appraises contraindicated.
	real := mustToken(t, k.newClient(t))
	claims, _, err := k.srv.tokens.Verify(real)
	if err != nil {
		t.Fatal(err)
	}
	signer := k.srv.builtin.Signer()
	affirmed := *claims
	cpu := claims.Submods["cpu0"]
	cpu.Status = ear.StatusAffirming
	affirmed.Submods = map[string]ear.Appraisal{"cpu0": cpu}
	affirming, _ := signer.Sign(&affirmed)
	keyless := affirmed
	keyless.Submods = map[string]ear.Appraisal{"cpu0": {Status: ear.StatusAffirming}}
	noKey, _ := signer.Sign(&keyless)
	weak := affirmed
	weak.Submods = map[string]ear.Appraisal{"cpu0": {Status: ear.StatusAffirming, AnnotatedEvidence: map[string]json.RawMessage{
		"runtime_data_claims": json.RawMessage(`{"tee-pubkey":{"kty":"RSA","alg":"RSA-OAEP-256","n":"AQAB","e":"AQAB"}}`)}}}
	weakKey, _ := signer.Sign(&weak)
	bearer := func(tok string) map[string]string { return bearerHdr(tok) }

	const res = "/kbs/v0/resource/default/key/x"
	big := bytes.Repeat([]byte(" "), 1<<20+10)
	j := func(v any) []byte { b, _ := json.Marshal(v); return b }
	k.expectErrors(t, []errCase{
		// RCAR: every refusal of auth and attest.
		{"version", "POST", "/kbs/v0/auth", []byte(`{"version":"0.3.0","tee":"sample"}`), nil, 401, protocol.KindAttestation, "0.3.0"},
		{"auth not JSON", "POST", "/kbs/v0/auth", []byte(`{`), nil, 401, protocol.KindAttestation, "malformed JSON"},
		{"no session", "POST", "/kbs/v0/attest", []byte(`{}`), nil, 401, protocol.KindAttestation, "no session cookie"},
		// Resources.
		{"no token", "GET", res, nil, nil, 401, protocol.KindTokenNotFound, ""},
		{"garbage token", "GET", res, nil, bearer("garbage"), 401, protocol.KindTokenVerifier, ""},
		{"no tee-pubkey", "GET", res, nil, bearer(noKey), 401, protocol.KindTokenVerifier, "tee-pubkey"},
		{"contraindicated", "GET", res, nil, bearer(real), 401, protocol.KindPolicyDeny,
			"the token's cpu0 appraisal is contraindicated: executables 33, hardware 97"},
		{"eval conflict", "GET", res + "?conflict=1", nil, bearer(affirming), 401, protocol.KindPolicyEngine, ""},
		{"unusable tee-pubkey", "GET", res, nil, bearer(weakKey), 401, protocol.KindJwe, ""},
		{"missing resource", "GET", "/kbs/v0/resource/default/key/none", nil, bearer(affirming), 401, protocol.KindPluginInternal,
			"resource default/key/none not found"},
		{"two segments", "GET", "/kbs/v0/resource/default/key", nil, bearer(affirming), 401, protocol.KindPluginInternal, "repository/type/tag"},
		// Admin endpoints.
		{"no admin token", "POST", "/kbs/v0/resource-policy", policyBody(t, resourcePolicy, nil), nil, 401, protocol.KindAdminAuth, ""},
		{"resource write without token", "POST", res, []byte("x"), nil, 401, protocol.KindAdminAuth, ""},
		{"resource policy not base64", "POST", "/kbs/v0/resource-policy", j(map[string]string{"policy": "!"}), admin, 401, protocol.KindParsePolicy, "base64"},
		{"resource policy missing", "POST", "/kbs/v0/resource-policy", []byte(`{}`), admin, 401, protocol.KindParsePolicy, "no policy"},
		{"resource policy not JSON", "POST", "/kbs/v0/resource-policy", []byte(`{`), admin, 401, protocol.KindParsePolicy, ""},
		{"resource policy not Rego", "POST", "/kbs/v0/resource-policy", policyBody(t, "allow", nil), admin, 401, protocol.KindPolicyEngine, ""},
		{"attestation policy not Rego", "POST", "/kbs/v0/attestation-policy", policyBody(t, "allow", nil), admin, 401, protocol.KindAttestation, ""},
		{"attestation policy not JSON", "POST", "/kbs/v0/attestation-policy", []byte(`[`), admin, 401, protocol.KindAttestation, ""},
		{"reference value message", "POST", "/kbs/v0/reference-value", []byte(`{}`), admin, 401, protocol.KindRvps, ""},
		{"unknown reference value", "GET", "/kbs/v0/reference-value/nothing", nil, admin, 401, protocol.KindRvps, "nothing"},
		// Paths and methods.
		{"dot dot", "GET", "/kbs/v0/resource/default/../x", nil, nil, 404, protocol.KindInvalidPath, ""},
		{"unknown plugin", "GET", "/kbs/v0/nebula-ca/x", nil, nil, 404, protocol.KindPluginNotFound, "nebula-ca"},
		{"GET auth", "GET", "/kbs/v0/auth", nil, nil, 404, protocol.KindPluginNotFound, "auth takes POST"},
		{"DELETE resource-policy", "DELETE", "/kbs/v0/resource-policy", nil, admin, 404, protocol.KindPluginNotFound, ""},
		{"PATCH", "PATCH", res, nil, nil, 405, protocol.KindMethodNotAllowed, ""},
		{"big body", "POST", "/kbs/v0/auth", big, nil, 413, protocol.KindPayloadTooLarge, ""},
	})

	// GET resource-policy answers the policies' ids, as Trustee does.
	if r := k.do(t, "GET", "/kbs/v0/resource-policy", nil, admin); r.status != 200 || string(r.body) != "[\"resource-policy\"]\n" {
		t.Errorf("GET resource-policy: %d %s", r.status, r.body)
	}
}

// TestTrusteeErrorTypesFaults: the KBS's own failures are answered as
// Trustee answers them, with the endpoint's variant and a 401, and no
// detail; the rate limit is Cocoon's 429.
func TestTrusteeErrorTypesFaults(t *testing.T) {
	k := newKBS(t, `data_dir = "@DATA@"
[limits]
rcar_rate = 0.001
rcar_burst = 1
[http_server]
insecure_http = true
[storage_backend]
storage_type = "Embedded"
[storage_backend.backends.embedded]
path = "@DATA@/db"
`)
	admin := bearerHdr(k.adminToken(t, AdminRole, time.Minute))
	k.challenge(t, "sample")
	if err := k.srv.store.Close(); err != nil {
		t.Fatal(err)
	}
	k.expectErrors(t, []errCase{
		{"rate limit", "POST", "/kbs/v0/auth", []byte(`{"version":"0.4.0","tee":"sample"}`), nil, 429, protocol.KindTooManyRequests, ""},
		{"store", "POST", "/kbs/v0/resource/default/key/x", []byte("x"), admin, 401, protocol.KindPluginInternal, "internal error"},
		{"store", "GET", "/kbs/v0/resource-policy", nil, admin, 401, protocol.KindPolicyEngine, "internal error"},
	})
}
