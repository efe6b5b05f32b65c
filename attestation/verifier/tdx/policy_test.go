package tdx

import (
	"context"
	"encoding/json"
	"reflect"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/types"

	"github.com/cocoon-cc/cocoon/attestation/verifier"
	"github.com/cocoon-cc/cocoon/attestation/verifier/dcap"
	"github.com/cocoon-cc/cocoon/attestation/verifier/dcap/dcaptest"
)

// tdxPolicy makes the checks of the TDX section of Trustee's default CPU
// policy, on the same claim paths, plus the event shapes its
// kernel-measurement rules read (type_name, details.device_paths,
// details.string, digests[].digest) and the AAEL runtime events.
const tdxPolicy = `package policy

import rego.v1

default hardware := 97
default configuration := 36
default executables := 33

hardware := 2 if {
	input.tdx.quote.header.tee_type == "81000000"
	input.tdx.quote.header.vendor_id == "939a7233f79c4ca9940a0db3957f0607"
	input.tdx.quote.body.mr_td in query_reference_value("mr_td")
	input.tdx.tcb_status == "UpToDate"
	input.tdx.collateral_expiration_status == "0"
}

configuration := 2 if {
	input.tdx.td_attributes.debug == false
	input.tdx.quote.body.xfam in query_reference_value("xfam")
}

executables := 3 if {
	input.tdx.quote.body.rtmr_1 in query_reference_value("rtmr_1")
	input.tdx.quote.body.rtmr_2 in query_reference_value("rtmr_2")
	boot_loader_ok
	runtime_event_ok
}

boot_loader_ok if {
	event := input.tdx.uefi_event_logs[_]
	event.type_name == "EV_EFI_BOOT_SERVICES_APPLICATION"
	"File(\\EFI\\alinux\\grubx64.efi)" in event.details.device_paths
	digest := event.digests[_]
	digest.alg == "SHA-384"
	digest.digest in query_reference_value("grub")
}

runtime_event_ok if {
	event := input.tdx.uefi_event_logs[_]
	event.type_name == "EV_EVENT_TAG"
	event.details.unicode_name == "AAEL"
	event.details.data.content["nested-key"]["sub-key"] == "value"
}

trust_claims := {"hardware": hardware, "configuration": configuration, "executables": executables}
`

func evalPolicy(t *testing.T, claims verifier.Claims, refs map[string][]any) map[string]any {
	t.Helper()
	refValue := rego.Function1(&rego.Function{Name: "query_reference_value", Decl: types.NewFunction(types.Args(types.S), types.A)},
		func(_ rego.BuiltinContext, name *ast.Term) (*ast.Term, error) {
			v, err := ast.InterfaceToValue(refs[string(name.Value.(ast.String))])
			return ast.NewTerm(v), err
		})
	// Claims reach the policy as JSON, as in an attestation token.
	input := jsonValue(t, map[string]any{"tdx": claims})
	rs, err := rego.New(rego.Query("data.policy.trust_claims"), rego.Module("tdx.rego", tdxPolicy), refValue,
		rego.Input(input)).Eval(context.Background())
	if err != nil || len(rs) != 1 {
		t.Fatalf("policy: %v %v", rs, err)
	}
	return jsonValue(t, rs[0].Expressions[0].Value).(map[string]any)
}

// TestPolicyOnClaims evaluates a policy written against Trustee's claim
// names on claims of a consistent quote with a CCEL and runtime events.
// Reference values come from Trustee's expected outputs, not from the
// claims under test.
func TestPolicyOnClaims(t *testing.T) {
	var expected struct {
		Quote struct {
			Body struct {
				MrTD string `json:"mr_td"`
				XFAM string `json:"xfam"`
			} `json:"body"`
		} `json:"quote"`
	}
	if err := json.Unmarshal(trusteeData(t, "parse_tdx_claims_expected.json"), &expected); err != nil {
		t.Fatal(err)
	}
	logData := trusteeEventlogData(t, "CCEL_AAEL_alibabacloud")
	log, err := ParseEventLog(logData)
	if err != nil {
		t.Fatal(err)
	}
	rtmrs, err := log.ReplayRTMRs()
	if err != nil {
		t.Fatal(err)
	}
	p := newTestPKI(t, sgxExtensionOf(t, sampleQuote(t)))
	quote := func(debug bool) []byte {
		return p.quote(t, sampleQuote(t), func(q *Quote) {
			q.Body.RTMR = rtmrs
			q.Body.TDAttributes[0] &^= 1
			if debug {
				q.Body.TDAttributes[0] |= 1
			}
		})
	}
	refs := map[string][]any{
		"mr_td":  {expected.Quote.Body.MrTD},
		"xfam":   {expected.Quote.Body.XFAM},
		"rtmr_1": {"3b0b906140fcea689c8774ac1eafcf0fef8e22ba81a047fd750ebd7df3235c2704df6106a758e31e5645e9838ff37406"},
		"rtmr_2": {"35f2801338c1b5fce96518f058c37e0fe9ed247a12dcd5f50d9c18fe4b6c71311bb63fca2640c7915817b6aa412a8480"},
		// The digest Trustee's expected parse shows for grubx64.efi.
		"grub": {"1c6b41cc5f1e08dff906e381580dc5c200b3c4785f3910682c74fd2ac0421f324216165478595b5e799d2b2134d22b75"},
	}
	outOfDate := sampleTestCollateral(t)
	dcaptest.Level(outOfDate.TCBInfo, 0)["tcbStatus"] = dcap.StatusOutOfDate
	tests := []struct {
		name  string
		debug bool
		coll  *dcaptest.Collateral
		want  map[string]any
	}{
		{"affirming", false, sampleTestCollateral(t), map[string]any{"hardware": 2.0, "configuration": 2.0, "executables": 3.0}},
		{"debug TD", true, sampleTestCollateral(t), map[string]any{"hardware": 2.0, "configuration": 36.0, "executables": 3.0}},
		{"out-of-date TCB", false, outOfDate, map[string]any{"hardware": 97.0, "configuration": 2.0, "executables": 3.0}},
	}
	for _, tc := range tests {
		claims, err := evaluate(t, p.verifier(t, p.Dir(t, tc.coll)), quote(tc.debug), logData, verifier.Expected{})
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if got := evalPolicy(t, claims, refs); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s: trust claims %v, want %v", tc.name, got, tc.want)
		}
	}
}
