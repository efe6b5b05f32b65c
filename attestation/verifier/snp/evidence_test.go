package snp

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/cocoon-cc/cocoon/attestation/verifier"
)

// setJSONField returns the evidence with one report field replaced (or
// removed when value is empty).
func setJSONField(t *testing.T, ev []byte, field, value string) []byte {
	t.Helper()
	var top map[string]json.RawMessage
	var rep map[string]json.RawMessage
	if err := json.Unmarshal(ev, &top); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(top["attestation_report"], &rep); err != nil {
		t.Fatal(err)
	}
	if value == "" {
		delete(rep, field)
	} else {
		rep[field] = json.RawMessage(value)
	}
	b, err := json.Marshal(rep)
	if err != nil {
		t.Fatal(err)
	}
	top["attestation_report"] = b
	if b, err = json.Marshal(top); err != nil {
		t.Fatal(err)
	}
	return b
}

func setCertChain(t *testing.T, ev []byte, value string) []byte {
	t.Helper()
	var top map[string]json.RawMessage
	if err := json.Unmarshal(ev, &top); err != nil {
		t.Fatal(err)
	}
	top["cert_chain"] = json.RawMessage(value)
	b, err := json.Marshal(top)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func decodeAny(t *testing.T, b []byte) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// The e2e evidence was written by an older sev crate without the
// mitigation vectors; otherwise MarshalJSON writes what it reads.
func TestEvidenceRoundTrip(t *testing.T) {
	orig := trusteeEvidence(t)
	ev, err := ParseEvidence(orig)
	if err != nil {
		t.Fatal(err)
	}
	out, err := ev.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	want := decodeAny(t, orig)
	rep := want["attestation_report"].(map[string]any)
	rep["launch_mit_vector"], rep["current_mit_vector"] = nil, nil
	if got := decodeAny(t, out); !reflect.DeepEqual(got, want) {
		t.Errorf("round trip changed the evidence:\n%s", out)
	}
}

// Every raw sample survives raw -> JSON -> raw: the JSON form carries every
// signed byte of a well-formed report.
func TestRawJSONRoundTrip(t *testing.T) {
	for _, s := range samples(t) {
		r, err := ParseReport(s.raw)
		if err != nil {
			t.Fatal(err)
		}
		b, err := (&Evidence{Report: r, Certs: s.certs}).MarshalJSON()
		if err != nil {
			t.Fatal(err)
		}
		ev, err := ParseEvidence(b)
		if err != nil {
			t.Fatalf("%s: %v\n%s", s.name, err, b)
		}
		if !bytes.Equal(ev.Report.Bytes(), s.raw) || !reflect.DeepEqual(ev.Certs, s.certs) {
			t.Errorf("%s: round trip changed the report or certificates", s.name)
		}
		// And the JSON form verifies like the raw one.
		_, err = newVerifier(t, Options{DisableKDS: true, Now: at(s.now)}).Evaluate(ctx, b, verifier.Expected{})
		if !errors.Is(err, s.wantErr) || (err == nil) != (s.wantErr == nil) {
			t.Errorf("%s: Evaluate: %v", s.name, err)
		}
	}
}

func TestEvidenceJSONStrictness(t *testing.T) {
	ev := trusteeEvidence(t)
	bad := map[string][]byte{
		"missing measurement":  setJSONField(t, ev, "measurement", ""),
		"missing reported_tcb": setJSONField(t, ev, "reported_tcb", ""),
		"short measurement":    setJSONField(t, ev, "measurement", "[1,2,3]"),
		"byte over 255":        setJSONField(t, ev, "host_data", "["+strings.Repeat("0,", 31)+"256]"),
		"negative byte":        setJSONField(t, ev, "host_data", "["+strings.Repeat("0,", 31)+"-1]"),
		"float version":        setJSONField(t, ev, "version", "3.0"),
		"exponent version":     setJSONField(t, ev, "version", "3e0"),
		"string version":       setJSONField(t, ev, "version", `"3"`),
		"null vmpl":            setJSONField(t, ev, "vmpl", "null"),
		"vmpl over u32":        setJSONField(t, ev, "vmpl", "4294967296"),
		"tcb not object":       setJSONField(t, ev, "current_tcb", "[1]"),
		"tcb missing snp":      setJSONField(t, ev, "launch_tcb", `{"fmc":null,"bootloader":1,"tee":0,"microcode":2}`),
		"version missing":      setJSONField(t, ev, "current", `{"major":1,"minor":55}`),
		"signature short":      setJSONField(t, ev, "signature", `{"r":[1],"s":[2]}`),
		"signature no s":       setJSONField(t, ev, "signature", `{"r":[`+strings.Repeat("0,", 71)+`0]}`),
		"bytes as base64":      setJSONField(t, ev, "chip_id", `"AAAA"`),
		"nested element":       setJSONField(t, ev, "family_id", "["+strings.Repeat("0,", 15)+"[0]]"),
		"unknown cert_type":    setCertChain(t, ev, `[{"cert_type":"PEK","data":[48]}]`),
		"cert data missing":    setCertChain(t, ev, `[{"cert_type":"VCEK"}]`),
		"cert data string":     setCertChain(t, ev, `[{"cert_type":"VCEK","data":"MIIB"}]`),
		"cert_chain object":    setCertChain(t, ev, `{"VCEK":[48]}`),
		"bad OTHER":            setCertChain(t, ev, `[{"cert_type":{"OTHER":1},"data":[]}]`),
		"version 1":            setJSONField(t, ev, "version", "1"),
		"version 6":            setJSONField(t, ev, "version", "6"),
		"reserved policy bit":  setJSONField(t, ev, "policy", "0"),
		"reserved key_info":    setJSONField(t, ev, "key_info", "32"),
	}
	for name, b := range bad {
		if _, err := ParseEvidence(b); !errors.Is(err, verifier.ErrMalformedEvidence) {
			t.Errorf("%s: %v", name, err)
		}
	}
	// serde ignores unknown fields and takes null for absent optionals;
	// CRL and OTHER entries are not used.
	good := map[string][]byte{
		"unknown field":     setJSONField(t, ev, "future_field", `{"x":1}`),
		"whitespace":        setJSONField(t, ev, "guest_svn", " 0 "),
		"mitigation on v3":  setJSONField(t, ev, "launch_mit_vector", "5"),
		"other cert types":  setCertChain(t, ev, `[{"cert_type":"CRL","data":[1]},{"cert_type":{"OTHER":"ecae0c0f-9502-43b1-afa2-0ae2e0d565b6"},"data":[]},`+firstEntry(t, ev)+`]`),
		"fmc before Turin":  setJSONField(t, ev, "launch_tcb", `{"fmc":9,"bootloader":10,"tee":0,"snp":23,"microcode":25}`),
		"missing fmc field": setJSONField(t, ev, "launch_tcb", `{"bootloader":10,"tee":0,"snp":23,"microcode":25}`),
	}
	v := newVerifier(t, Options{DisableKDS: true})
	for name, b := range good {
		if _, err := v.Evaluate(ctx, b, verifier.Expected{}); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	// Without certificates and without a way to get them.
	if _, err := v.Evaluate(ctx, setCertChain(t, ev, "null"), verifier.Expected{}); !errors.Is(err, ErrNoEndorsementKey) {
		t.Errorf("cert_chain null: %v", err)
	}
}

func firstEntry(t *testing.T, ev []byte) string {
	var top struct {
		Chain []json.RawMessage `json:"cert_chain"`
	}
	if err := json.Unmarshal(ev, &top); err != nil {
		t.Fatal(err)
	}
	return string(top.Chain[0])
}

func TestTCBLayout(t *testing.T) {
	legacy := TCB{Bootloader: 2, TEE: 0, SNP: 6, Microcode: 21}
	if v := legacy.encode(false); v != 0x1506000000000002 || decodeTCB(v, false) != legacy {
		t.Errorf("legacy: %#x", v)
	}
	turin := TCB{FMC: 5, Bootloader: 3, TEE: 1, SNP: 8, Microcode: 15}
	if v := turin.encode(true); v != 0x0f00000008010305 || decodeTCB(v, true) != turin {
		t.Errorf("turin: %#x", v)
	}
	// The names Trustee's offline store uses.
	if got := legacy.storeName(false); got != "bl02_tee00_snp06_ucode21" {
		t.Error(got)
	}
	if got := turin.storeName(true); got != "bl03_tee01_snp08_ucode15_fmc05" {
		t.Error(got)
	}
}

// A Turin report lays its TCBs out differently; the JSON form must follow.
func TestTurinJSONLayout(t *testing.T) {
	ev := setJSONField(t, trusteeEvidence(t), "cpuid_fam_id", "26")
	ev = setJSONField(t, ev, "cpuid_mod_id", "2")
	ev = setJSONField(t, ev, "reported_tcb", `{"fmc":5,"bootloader":3,"tee":1,"snp":8,"microcode":15}`)
	e, err := ParseEvidence(ev)
	if err != nil {
		t.Fatal(err)
	}
	if e.Report.Product() != Turin || e.Report.Proto().ReportedTcb != 0x0f00000008010305 ||
		e.Report.ReportedTCB() != (TCB{FMC: 5, Bootloader: 3, TEE: 1, SNP: 8, Microcode: 15}) {
		t.Errorf("Turin TCB %#x", e.Report.Proto().ReportedTcb)
	}
	out, _ := e.MarshalJSON()
	if !bytes.Contains(out, []byte(`"reported_tcb":{"fmc":5,"bootloader":3,"tee":1,"snp":8,"microcode":15}`)) {
		t.Errorf("Turin TCB written as %s", out)
	}
	if got := storePath(e.Report); !strings.HasSuffix(got, "/bl03_tee01_snp08_ucode15_fmc05_vcek.der") || len(strings.Split(got, "/")[1]) != 16 {
		t.Errorf("Turin store path %s", got)
	}
}
