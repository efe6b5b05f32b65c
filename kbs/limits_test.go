package kbs

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/cocoon-cc/cocoon/protocol"
)

// hugeRange builds a range of 100 million numbers: gigabytes, minutes.
const hugeRange = `package policy
import rego.v1
allow if count([x | some x in numbers.range(1, 100000000)]) > 0
trust_claims := {"hardware": 2} if allow
`

func policyBody(t *testing.T, text string, extra map[string]string) []byte {
	t.Helper()
	m := map[string]string{"policy": base64.RawURLEncoding.EncodeToString([]byte(text))}
	for k, v := range extra {
		m[k] = v
	}
	b, _ := json.Marshal(m)
	return b
}

// TestPolicyBudget: a policy that overruns the evaluation budget on a
// sample input is refused at upload, through either admin endpoint; one
// that overruns only on some requests is stopped on those.
func TestPolicyBudget(t *testing.T) {
	k := newKBS(t, baseConfig("@DATA@", "[limits]\npolicy_eval_mib = 16\n"))
	if got := k.srv.cfg.Limits.PolicyBudget(); got.Memory != 16<<20 || got.Time != 2e9 {
		t.Fatalf("budget %+v", got)
	}
	admin := bearerHdr(k.adminToken(t, AdminRole, 60e9))
	sp := protocol.KindSetPolicy
	k.expectRefused(t, []badCase{
		{"resource policy", "POST", "/kbs/v0/resource-policy", policyBody(t, hugeRange, nil), admin, 401, sp},
		{"attestation policy", "POST", "/kbs/v0/attestation-policy", policyBody(t, hugeRange, map[string]string{"policy_id": "default_cpu"}), admin, 401, sp},
	})
	r := k.do(t, "POST", "/kbs/v0/resource-policy", policyBody(t, hugeRange, nil), admin)
	if !strings.Contains(string(r.body), "over budget") {
		t.Errorf("the refusal does not say why: %s", r.body)
	}

	// The sample input asks for no "deep" query: this one passes upload.
	guarded := `package policy
import rego.v1
default allow := false
allow if {
	input.submods.cpu0["ear.status"] == "affirming"
	not deep
}
deep if {
	data.query.deep == "1"
	count([x | some x in numbers.range(1, 100000000)]) > 0
}
`
	if r := k.do(t, "POST", "/kbs/v0/resource-policy", policyBody(t, guarded, nil), admin); r.status != 200 {
		t.Fatalf("guarded policy: %d %s", r.status, r.body)
	}
	k.registerSampleRVs(t)
	k.srv.resources.store.Put(bg, ResourceNamespace, "default/key/x", []byte("x"))
	c := k.newClient(t)
	tok := mustToken(t, c)
	var kerr *protocol.Error
	if _, err := c.GetResource(bg, "default/key/x?deep=1"); !errors.As(err, &kerr) || kerr.Kind != protocol.KindPolicyEngine ||
		!strings.Contains(kerr.Detail, "over budget") {
		t.Errorf("deep query: %v", err)
	}
	r = k.do(t, "GET", "/kbs/v0/resource/default/key/x", nil, bearerHdr(tok))
	if r.status != 200 {
		t.Errorf("after an overrun: %d %s", r.status, r.body)
	}
}
