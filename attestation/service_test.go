package attestation

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	gojose "github.com/go-jose/go-jose/v4"

	"github.com/cocoon-cc/cocoon/attestation/ear"
	"github.com/cocoon-cc/cocoon/attestation/verifier"
	"github.com/cocoon-cc/cocoon/attestation/verifier/sample"
	"github.com/cocoon-cc/cocoon/initdata"
	"github.com/cocoon-cc/cocoon/policy"
	"github.com/cocoon-cc/cocoon/protocol"
	"github.com/cocoon-cc/cocoon/rvps"
	"github.com/cocoon-cc/cocoon/store"
	"github.com/cocoon-cc/cocoon/store/memory"
)

var ctx = context.Background()

// stubVerifier returns fixed claims for a TEE without a real verifier in
// this package's reach.
type stubVerifier struct {
	results []verifier.TeeClaims
	err     error
}

func (s stubVerifier) Evaluate(_ context.Context, _ json.RawMessage, _ verifier.Expected) ([]verifier.TeeClaims, error) {
	// Hand out copies: the service edits the claims it gets.
	out := make([]verifier.TeeClaims, len(s.results))
	for i, r := range s.results {
		out[i] = verifier.TeeClaims{Class: r.Class, Claims: maps.Clone(r.Claims)}
	}
	return out, s.err
}

type fixture struct {
	svc    *Service
	store  store.Store
	rv     *rvps.Service
	signer *ear.Signer
	now    time.Time
}

func newFixture(t *testing.T, cfg Config) *fixture {
	t.Helper()
	st := memory.New()
	rv := rvps.New(st)
	pols, err := NewPolicies(ctx, st, rv)
	if err != nil {
		t.Fatal(err)
	}
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	signer, err := ear.NewSigner(k, nil)
	if err != nil {
		t.Fatal(err)
	}
	reg := verifier.Registry{
		protocol.TeeSample: sample.Verifier{},
		protocol.TeeSNP: stubVerifier{results: []verifier.TeeClaims{{Class: "cpu", Claims: verifier.Claims{
			"measurement": "00", "report_data": "00"}}}},
		protocol.TeeNvidia: stubVerifier{results: []verifier.TeeClaims{
			{Class: "gpu", Claims: verifier.Claims{"id": "gpu-a"}},
			{Class: "gpu", Claims: verifier.Claims{"id": "gpu-b"}}}},
	}
	f := &fixture{svc: New(reg, pols, signer, cfg), store: st, rv: rv, signer: signer,
		now: time.Date(2025, 6, 1, 10, 0, 0, 0, time.UTC)}
	f.svc.now = func() time.Time { return f.now }
	return f
}

func (f *fixture) register(t *testing.T, values map[string]any) {
	t.Helper()
	payload, _ := json.Marshal(values)
	msg, _ := json.Marshal(rvps.Message{Version: rvps.MessageVersion, Type: "sample",
		Payload: base64.StdEncoding.EncodeToString(payload)})
	if _, err := f.rv.Register(ctx, msg); err != nil {
		t.Fatal(err)
	}
}

var allSampleValues = map[string]any{
	"launch_digest":         []string{"abcde"},
	"svn":                   []string{"1"},
	"major_version":         1,
	"minimum_minor_version": 0,
}

var teeKey = protocol.TeePubKey{Kty: "EC", Alg: "ECDH-ES+A256KW", Crv: "P-256", X: "xxxx", Y: "yyyy"}

// sampleRequest builds a request whose evidence is bound to its runtime data.
func sampleRequest(t *testing.T, nonce string) Request {
	t.Helper()
	empty := ""
	rd := protocol.RuntimeDataClaims(nonce, teeKey, &empty)
	digest, err := protocol.ReportData(rd)
	if err != nil {
		t.Fatal(err)
	}
	ev, _ := json.Marshal(sample.Evidence{SVN: "1", ReportData: base64.StdEncoding.EncodeToString(digest)})
	return Request{Tee: protocol.TeeSample, Evidence: ev, RuntimeData: rd}
}

func (f *fixture) evaluate(t *testing.T, reqs ...Request) (*ear.Claims, map[string]any) {
	t.Helper()
	tok, claims, err := f.svc.Evaluate(ctx, reqs, "")
	if err != nil {
		t.Fatal(err)
	}
	// The token verifies with the service's key and carries the claims.
	v := ear.NewVerifier(ear.VerifierOptions{Keys: []gojose.JSONWebKey{f.signer.Public()}, Now: func() time.Time { return f.now }})
	got, raw, err := v.Verify(tok)
	if err != nil {
		t.Fatalf("token does not verify: %v", err)
	}
	gb, _ := json.Marshal(got)
	cb, _ := json.Marshal(claims)
	if string(gb) != string(cb) {
		t.Errorf("token claims differ from the returned claims:\n%s\n%s", gb, cb)
	}
	return claims, raw
}

func vector(ex, hw, conf int) ear.TrustVector {
	var v ear.TrustVector
	v.Set("executables", ex)
	v.Set("hardware", hw)
	v.Set("configuration", conf)
	return v
}

func TestEvaluateAffirming(t *testing.T) {
	f := newFixture(t, Config{})
	f.register(t, allSampleValues)
	claims, raw := f.evaluate(t, sampleRequest(t, "bm9uY2U="))
	cpu, ok := claims.Submods["cpu0"]
	if !ok || len(claims.Submods) != 1 {
		t.Fatalf("submods %v", slices.Collect(maps.Keys(claims.Submods)))
	}
	if cpu.Status != ear.StatusAffirming {
		t.Errorf("status %s", cpu.Status)
	}
	if cpu.TrustVector != vector(3, 2, 2) {
		t.Errorf("vector %+v", cpu.TrustVector)
	}
	if cpu.PolicyID != DefaultPolicyID {
		t.Errorf("policy id %q", cpu.PolicyID)
	}
	if claims.Profile != ear.Profile || claims.Issuer != "cocoon-attestation-service" {
		t.Errorf("profile %q issuer %q", claims.Profile, claims.Issuer)
	}
	if claims.IssuedAt != f.now.Unix() || claims.Expiry != f.now.Add(5*time.Minute).Unix() {
		t.Errorf("iat %d exp %d", claims.IssuedAt, claims.Expiry)
	}
	// Annotated evidence in Trustee's shape.
	ae := raw["submods"].(map[string]any)["cpu0"].(map[string]any)["ear.veraison.annotated-evidence"].(map[string]any)
	smp, ok := ae["sample"].(map[string]any)
	if !ok || smp["svn"] != "1" || smp["launch_digest"] != "abcde" {
		t.Errorf("sample claims %v", ae["sample"])
	}
	if _, ok := smp["report_data"]; ok {
		t.Error("report_data not lifted out of the TEE claims")
	}
	if _, ok := ae["report_data"].(string); !ok {
		t.Errorf("report_data %v", ae["report_data"])
	}
	rdc := ae["runtime_data_claims"].(map[string]any)
	if rdc["nonce"] != "bm9uY2U=" || rdc["tee-pubkey"].(map[string]any)["x"] != "xxxx" {
		t.Errorf("runtime_data_claims %v", rdc)
	}
	if _, ok := rdc["additional-evidence"]; ok {
		t.Error("additional-evidence kept without Verbose")
	}
	if _, ok := ae["init_data"]; ok {
		t.Error("init_data without initdata")
	}
}

func TestEvaluateVerboseAndCallerMap(t *testing.T) {
	f := newFixture(t, Config{Verbose: true, Issuer: "me", TokenDuration: time.Hour})
	req := sampleRequest(t, "n")
	before := maps.Clone(req.RuntimeData)
	claims, raw := f.evaluate(t, req)
	ae := raw["submods"].(map[string]any)["cpu0"].(map[string]any)["ear.veraison.annotated-evidence"].(map[string]any)
	if v, ok := ae["runtime_data_claims"].(map[string]any)["additional-evidence"]; !ok || v != "" {
		t.Errorf("Verbose: additional-evidence %v, %v", v, ok)
	}
	if claims.Issuer != "me" || claims.Expiry-claims.IssuedAt != 3600 {
		t.Errorf("issuer %q, lifetime %d", claims.Issuer, claims.Expiry-claims.IssuedAt)
	}
	// The caller's runtime data map is left alone.
	f2 := newFixture(t, Config{})
	f2.evaluate(t, req)
	if !slices.Equal(slices.Sorted(maps.Keys(req.RuntimeData)), slices.Sorted(maps.Keys(before))) {
		t.Errorf("caller's runtime data changed: %v", req.RuntimeData)
	}
}

func TestEvaluateWithoutReferenceValues(t *testing.T) {
	cases := []struct {
		name   string
		values map[string]any
		want   ear.TrustVector
		status ear.Status
	}{
		{"none registered", nil, vector(33, 97, 2), ear.StatusContraindicated},
		{"executables only", map[string]any{"launch_digest": []string{"abcde"}}, vector(3, 97, 2), ear.StatusContraindicated},
		{"hardware only", map[string]any{"svn": []string{"1"}, "major_version": 1, "minimum_minor_version": 0},
			vector(33, 2, 2), ear.StatusWarning},
		{"wrong launch digest", map[string]any{"launch_digest": []string{"fffff"}, "svn": []string{"1"},
			"major_version": 1, "minimum_minor_version": 0}, vector(33, 2, 2), ear.StatusWarning},
		{"svn not listed", map[string]any{"launch_digest": []string{"abcde"}, "svn": []string{"2"},
			"major_version": 1, "minimum_minor_version": 0}, vector(3, 97, 2), ear.StatusContraindicated},
		{"minor too old", map[string]any{"launch_digest": []string{"abcde"}, "svn": []string{"1"},
			"major_version": 1, "minimum_minor_version": 5}, vector(3, 97, 2), ear.StatusContraindicated},
		{"major differs", map[string]any{"launch_digest": []string{"abcde"}, "svn": []string{"1"},
			"major_version": 2, "minimum_minor_version": 0}, vector(3, 97, 2), ear.StatusContraindicated},
		{"minimum minor missing", map[string]any{"launch_digest": []string{"abcde"}, "svn": []string{"1"},
			"major_version": 1}, vector(3, 97, 2), ear.StatusContraindicated},
		{"minimum minor not a number", map[string]any{"launch_digest": []string{"abcde"}, "svn": []string{"1"},
			"major_version": 1, "minimum_minor_version": "0"}, vector(3, 97, 2), ear.StatusContraindicated},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := newFixture(t, Config{})
			if c.values != nil {
				f.register(t, c.values)
			}
			claims, _ := f.evaluate(t, sampleRequest(t, "n"))
			cpu := claims.Submods["cpu0"]
			if cpu.TrustVector != c.want || cpu.Status != c.status {
				t.Errorf("vector %+v status %s; want %+v %s", cpu.TrustVector, cpu.Status, c.want, c.status)
			}
		})
	}
}

// TestDefaultVector: claims no rule of the default policy recognizes get
// 33 (executables), 97 (hardware), 36 (configuration).
func TestDefaultVector(t *testing.T) {
	f := newFixture(t, Config{})
	claims, raw := f.evaluate(t, Request{Tee: protocol.TeeSNP, Evidence: json.RawMessage(`{}`), RawRuntimeData: []byte{1}})
	cpu := claims.Submods["cpu0"]
	if cpu.TrustVector != vector(33, 97, 36) || cpu.Status != ear.StatusContraindicated {
		t.Errorf("vector %+v status %s", cpu.TrustVector, cpu.Status)
	}
	ae := raw["submods"].(map[string]any)["cpu0"].(map[string]any)["ear.veraison.annotated-evidence"].(map[string]any)
	if ae["snp"].(map[string]any)["measurement"] != "00" || ae["report_data"] != "00" {
		t.Errorf("annotated evidence %v", ae)
	}
	// Raw runtime data has no claims to show.
	if v, ok := ae["runtime_data_claims"]; !ok || v != nil {
		t.Errorf("runtime_data_claims %v (present %v)", v, ok)
	}
}

func TestReportDataMismatch(t *testing.T) {
	f := newFixture(t, Config{})
	f.register(t, allSampleValues)
	req := sampleRequest(t, "nonce-A")
	// The evidence answers another nonce.
	req.RuntimeData = sampleRequest(t, "nonce-B").RuntimeData
	tok, claims, err := f.svc.Evaluate(ctx, []Request{req}, "")
	if !errors.Is(err, ErrVerification) || !errors.Is(err, verifier.ErrReportDataMismatch) {
		t.Fatalf("Evaluate = %v, want ErrVerification wrapping ErrReportDataMismatch", err)
	}
	if tok != "" || claims != nil {
		t.Error("a token came back with the error")
	}
	// Another tee-pubkey than the one bound is a mismatch as well.
	req = sampleRequest(t, "n")
	other := teeKey
	other.X = "zzzz"
	empty := ""
	req.RuntimeData = protocol.RuntimeDataClaims("n", other, &empty)
	if _, _, err := f.svc.Evaluate(ctx, []Request{req}, ""); !errors.Is(err, verifier.ErrReportDataMismatch) {
		t.Errorf("other key: %v", err)
	}
	// Malformed evidence.
	req = sampleRequest(t, "n")
	req.Evidence = json.RawMessage(`[1]`)
	if _, _, err := f.svc.Evaluate(ctx, []Request{req}, ""); !errors.Is(err, ErrVerification) || !errors.Is(err, verifier.ErrMalformedEvidence) {
		t.Errorf("malformed evidence: %v", err)
	}
}

func TestUnknownTee(t *testing.T) {
	f := newFixture(t, Config{})
	req := sampleRequest(t, "n")
	req.Tee = protocol.TeeTDX
	if _, _, err := f.svc.Evaluate(ctx, []Request{req}, ""); !errors.Is(err, verifier.ErrUnsupportedTee) {
		t.Errorf("Evaluate = %v, want ErrUnsupportedTee", err)
	}
	if _, _, err := f.svc.Evaluate(ctx, nil, ""); !errors.Is(err, ErrNoEvidence) {
		t.Errorf("no requests: %v, want ErrNoEvidence", err)
	}
}

const initDoc = `version = "0.1.0"
algorithm = "sha256"

[data]
"aa.toml" = '''
[token_configs.kbs]
url = "http://kbs:8080"
'''
"policy.rego" = "package agent_policy"
`

func TestInitData(t *testing.T) {
	f := newFixture(t, Config{})
	f.register(t, allSampleValues)
	req := sampleRequest(t, "n")
	req.InitData = &InitData{TOML: []byte(initDoc)}
	_, raw := f.evaluate(t, req)
	ae := raw["submods"].(map[string]any)["cpu0"].(map[string]any)["ear.veraison.annotated-evidence"].(map[string]any)
	digest := sha256.Sum256([]byte(initDoc))
	if ae["init_data"] != base64.StdEncoding.EncodeToString(digest[:]) {
		t.Errorf("init_data %v, want the digest %x", ae["init_data"], digest)
	}
	idc, ok := ae["init_data_claims"].(map[string]any)
	if !ok {
		t.Fatalf("init_data_claims %v", ae["init_data_claims"])
	}
	url := idc["aa.toml"].(map[string]any)["token_configs"].(map[string]any)["kbs"].(map[string]any)["url"]
	if url != "http://kbs:8080" || idc["policy.rego"] != "package agent_policy" {
		t.Errorf("init_data_claims %v", idc)
	}
	if _, ok := ae["sample"].(map[string]any)["init_data"]; ok {
		t.Error("init_data not lifted out of the TEE claims")
	}

	// A digest only: no claims.
	req.InitData = &InitData{Digest: []byte{1, 2, 3}}
	_, raw = f.evaluate(t, req)
	ae = raw["submods"].(map[string]any)["cpu0"].(map[string]any)["ear.veraison.annotated-evidence"].(map[string]any)
	if ae["init_data"] != base64.StdEncoding.EncodeToString([]byte{1, 2, 3}) || ae["init_data_claims"] != nil {
		t.Errorf("digest-only initdata: %v / %v", ae["init_data"], ae["init_data_claims"])
	}

	// Bad initdata is refused before verification.
	req.InitData = &InitData{TOML: []byte("version = \"9\"\nalgorithm = \"sha256\"\n")}
	if _, _, err := f.svc.Evaluate(ctx, []Request{req}, ""); !errors.Is(err, initdata.ErrInvalid) {
		t.Errorf("bad initdata: %v, want initdata.ErrInvalid", err)
	}
}

func TestExpiredReferenceValues(t *testing.T) {
	f := newFixture(t, Config{})
	f.register(t, allSampleValues)
	if cpu := mustEval(t, f).Submods["cpu0"]; cpu.Status != ear.StatusAffirming {
		t.Fatalf("fresh values: %s", cpu.Status)
	}
	// Age the stored launch digest past its expiry.
	expire(t, f.rv, "launch_digest", time.Now().Add(-time.Second))
	cpu := mustEval(t, f).Submods["cpu0"]
	if cpu.TrustVector.Executables != 33 || cpu.Status != ear.StatusWarning {
		t.Errorf("expired launch_digest: %+v %s", cpu.TrustVector, cpu.Status)
	}
	// And the hardware values.
	expire(t, f.rv, "svn", time.Now().Add(-time.Hour))
	if cpu := mustEval(t, f).Submods["cpu0"]; cpu.TrustVector.Hardware != 97 || cpu.Status != ear.StatusContraindicated {
		t.Errorf("expired svn: %+v", cpu.TrustVector)
	}
	// An expired minimum minor version does not pass as null either.
	f.register(t, allSampleValues)
	expire(t, f.rv, "minimum_minor_version", time.Now().Add(-time.Second))
	if cpu := mustEval(t, f).Submods["cpu0"]; cpu.TrustVector.Hardware != 97 {
		t.Errorf("expired minimum_minor_version: %+v", cpu.TrustVector)
	}
	// Registering again restores them.
	f.register(t, allSampleValues)
	if cpu := mustEval(t, f).Submods["cpu0"]; cpu.Status != ear.StatusAffirming {
		t.Errorf("renewed values: %s", cpu.Status)
	}
}

func mustEval(t *testing.T, f *fixture) *ear.Claims {
	t.Helper()
	_, c, err := f.svc.Evaluate(ctx, []Request{sampleRequest(t, "n")}, "")
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func expire(t *testing.T, rv *rvps.Service, name string, at time.Time) {
	t.Helper()
	if err := rv.Expire(ctx, name, at); err != nil {
		t.Fatal(err)
	}
}

func TestHashAlgorithms(t *testing.T) {
	f := newFixture(t, Config{})
	for _, alg := range []string{"sha256", "sha384", "sha512", ""} {
		req := sampleRequest(t, "n")
		canon, _ := protocol.CanonicalJSON(req.RuntimeData)
		digest, err := Hash(alg, canon)
		if err != nil {
			t.Fatal(err)
		}
		want := map[string]int{"sha256": 32, "sha384": 48, "sha512": 64, "": 48}[alg]
		if len(digest) != want {
			t.Errorf("%s: %d bytes", alg, len(digest))
		}
		req.HashAlgorithm = alg
		req.Evidence, _ = json.Marshal(sample.Evidence{SVN: "1", ReportData: base64.StdEncoding.EncodeToString(digest)})
		if _, _, err := f.svc.Evaluate(ctx, []Request{req}, ""); err != nil {
			t.Errorf("%s: %v", alg, err)
		}
	}
	for _, alg := range []string{"md5", "SHA384", "sha-384", "sha1"} {
		if _, err := Hash(alg, nil); !errors.Is(err, ErrHashAlgorithm) {
			t.Errorf("Hash(%q): %v", alg, err)
		}
		req := sampleRequest(t, "n")
		req.HashAlgorithm = alg
		if _, _, err := f.svc.Evaluate(ctx, []Request{req}, ""); !errors.Is(err, ErrHashAlgorithm) {
			t.Errorf("Evaluate with %q: %v", alg, err)
		}
	}
	// Runtime data that is not JSON.
	req := sampleRequest(t, "n")
	req.RuntimeData = map[string]any{"f": func() {}}
	if _, _, err := f.svc.Evaluate(ctx, []Request{req}, ""); !errors.Is(err, ErrRuntimeData) {
		t.Errorf("non-JSON runtime data: %v", err)
	}
	// Raw runtime data is the report data as is.
	raw := []byte("exactly these bytes")
	ev, _ := json.Marshal(sample.Evidence{SVN: "1", ReportData: base64.StdEncoding.EncodeToString(raw)})
	if _, _, err := f.svc.Evaluate(ctx, []Request{{Tee: protocol.TeeSample, Evidence: ev, RawRuntimeData: raw}}, ""); err != nil {
		t.Errorf("raw runtime data: %v", err)
	}
	if _, _, err := f.svc.Evaluate(ctx, []Request{{Tee: protocol.TeeSample, Evidence: ev, RawRuntimeData: []byte("other")}}, ""); !errors.Is(err, verifier.ErrReportDataMismatch) {
		t.Errorf("other raw runtime data: %v", err)
	}
}

func TestPolicies(t *testing.T) {
	f := newFixture(t, Config{})
	req := sampleRequest(t, "n")
	// A policy id without a stored policy.
	if _, _, err := f.svc.Evaluate(ctx, []Request{req}, "mine"); !errors.Is(err, ErrPolicyEvaluated) || !errors.Is(err, policy.ErrNotFound) {
		t.Errorf("missing policy: %v", err)
	}
	set := func(id, text string) {
		t.Helper()
		if err := f.svc.Policies().Set(ctx, id, text); err != nil {
			t.Fatal(err)
		}
	}
	set("mine_cpu", "package policy\nimport rego.v1\ntrust_claims := {\"executables\": 2, \"hardware\": 2}\n")
	_, claims, err := f.svc.Evaluate(ctx, []Request{req}, "mine")
	if err != nil {
		t.Fatal(err)
	}
	if cpu := claims.Submods["cpu0"]; cpu.PolicyID != "mine" || cpu.Status != ear.StatusAffirming || cpu.TrustVector != vector(2, 2, 0) {
		t.Errorf("custom policy: %+v", cpu)
	}
	bad := map[string]struct {
		text string
		want error
	}{
		"no trust_claims":   {"package policy\nimport rego.v1\nx := 1\n", ErrNoTrustClaims},
		"all zero":          {"package policy\nimport rego.v1\ntrust_claims := {\"executables\": 0}\n", ErrNoTrustClaims},
		"empty object":      {"package policy\nimport rego.v1\ntrust_claims := {}\n", ErrNoTrustClaims},
		"not an object":     {"package policy\nimport rego.v1\ntrust_claims := [2]\n", ErrBadTrustClaims},
		"unknown claim":     {"package policy\nimport rego.v1\ntrust_claims := {\"speed\": 2}\n", ErrBadTrustClaims},
		"string value":      {"package policy\nimport rego.v1\ntrust_claims := {\"hardware\": \"2\"}\n", ErrBadTrustClaims},
		"fraction":          {"package policy\nimport rego.v1\ntrust_claims := {\"hardware\": 2.5}\n", ErrBadTrustClaims},
		"out of range":      {"package policy\nimport rego.v1\ntrust_claims := {\"hardware\": 128}\n", ErrBadTrustClaims},
		"below range":       {"package policy\nimport rego.v1\ntrust_claims := {\"hardware\": -129}\n", ErrBadTrustClaims},
		"huge":              {"package policy\nimport rego.v1\ntrust_claims := {\"hardware\": 1e30}\n", ErrBadTrustClaims},
		"evaluation failed": {"package policy\nimport rego.v1\ntrust_claims := {\"hardware\": to_number(\"x\")}\n", ErrPolicyEvaluated},
	}
	for name, c := range bad {
		set("bad_cpu", c.text)
		tok, claims, err := f.svc.Evaluate(ctx, []Request{req}, "bad")
		if !errors.Is(err, c.want) || tok != "" || claims != nil {
			t.Errorf("%s: %v, want %v", name, err, c.want)
		}
	}
	// Negative values are within range: -97 is contraindicated.
	set("neg_cpu", "package policy\nimport rego.v1\ntrust_claims := {\"hardware\": -97, \"executables\": 2}\n")
	if _, claims, err := f.svc.Evaluate(ctx, []Request{req}, "neg"); err != nil || claims.Submods["cpu0"].Status != ear.StatusContraindicated {
		t.Errorf("negative claim: %v", err)
	}
}

func TestDeviceClasses(t *testing.T) {
	f := newFixture(t, Config{})
	gpu := "package policy\nimport rego.v1\ntrust_claims := {\"hardware\": 2} if input.nvidia.id == \"gpu-a\"\ntrust_claims := {\"hardware\": 32} if input.nvidia.id == \"gpu-b\"\n"
	if err := f.svc.Policies().Set(ctx, "default_gpu", gpu); err != nil {
		t.Fatal(err)
	}
	f.register(t, allSampleValues)
	claims, _ := f.evaluate(t, sampleRequest(t, "n"), Request{Tee: protocol.TeeNvidia, Evidence: json.RawMessage(`{}`)},
		sampleRequest(t, "n"))
	keys := slices.Sorted(maps.Keys(claims.Submods))
	if !slices.Equal(keys, []string{"cpu0", "cpu1", "gpu0", "gpu1"}) {
		t.Fatalf("submods %v", keys)
	}
	if claims.Submods["gpu0"].Status != ear.StatusAffirming || claims.Submods["gpu1"].Status != ear.StatusWarning {
		t.Errorf("gpu statuses %s %s", claims.Submods["gpu0"].Status, claims.Submods["gpu1"].Status)
	}
	if claims.Submods["cpu1"].Status != ear.StatusAffirming {
		t.Errorf("cpu1 %s", claims.Submods["cpu1"].Status)
	}
	// Without the owner's policy the default GPU policy appraises: these
	// claims name no verified GPU.
	f2 := newFixture(t, Config{})
	if _, claims, err := f2.svc.Evaluate(ctx, []Request{{Tee: protocol.TeeNvidia, Evidence: json.RawMessage(`{}`)}}, ""); err != nil ||
		claims.Submods["gpu0"].Status != ear.StatusContraindicated {
		t.Errorf("default gpu policy: %v", err)
	}
	// A class without a policy fails the whole evaluation.
	if _, _, err := f2.svc.Evaluate(ctx, []Request{{Tee: protocol.TeeNvidia, Evidence: json.RawMessage(`{}`)}}, "nope"); !errors.Is(err, policy.ErrNotFound) {
		t.Errorf("no nope_gpu policy: %v", err)
	}
}

// TestClaimTypes: the policy reads a verifier's claims as their JSON,
// whatever Go types the verifier used, and the token carries the same.
func TestClaimTypes(t *testing.T) {
	f := newFixture(t, Config{})
	type tcb struct {
		SVN uint8 `json:"svn"`
	}
	f.svc.verifiers[protocol.TeeSNP] = stubVerifier{results: []verifier.TeeClaims{{Class: "cpu", Claims: verifier.Claims{
		"blob": []byte{1, 2}, "tcb": tcb{SVN: 7}, "n": uint16(3), "list": []int{4}, "nested": verifier.Claims{"ok": true}}}}}
	err := f.svc.Policies().Set(ctx, "default_cpu", `package policy
import rego.v1
trust_claims := {"hardware": 2} if {
	input.snp.blob == "AQI="
	input.snp.tcb.svn == 7
	input.snp.n == 3
	input.snp.list == [4]
	input.snp.nested.ok
}`)
	if err != nil {
		t.Fatal(err)
	}
	claims, _ := f.evaluate(t, Request{Tee: protocol.TeeSNP, Evidence: json.RawMessage(`{}`)})
	cpu := claims.Submods["cpu0"]
	if cpu.TrustVector != vector(0, 2, 0) {
		t.Errorf("vector %+v", cpu.TrustVector)
	}
	if got := string(cpu.AnnotatedEvidence["snp"]); got != `{"blob":"AQI=","list":[4],"n":3,"nested":{"ok":true},"tcb":{"svn":7}}` {
		t.Errorf("annotated evidence %s", got)
	}
}

func TestNewPoliciesKeepsStoredDefault(t *testing.T) {
	st := memory.New()
	rv := rvps.New(st)
	p1, err := NewPolicies(ctx, st, rv)
	if err != nil {
		t.Fatal(err)
	}
	if text, _ := p1.Get(ctx, "default_cpu"); text != DefaultCPUPolicy {
		t.Fatal("default policy not installed")
	}
	custom := "package policy\nimport rego.v1\ntrust_claims := {\"hardware\": 2}\n"
	if err := p1.Set(ctx, "default_cpu", custom); err != nil {
		t.Fatal(err)
	}
	p2, err := NewPolicies(ctx, st, rv)
	if err != nil {
		t.Fatal(err)
	}
	if text, _ := p2.Get(ctx, "default_cpu"); text != custom {
		t.Error("a restart replaced the custom default_cpu policy")
	}
}

func TestReferenceValueBuiltin(t *testing.T) {
	st := memory.New()
	rv := rvps.New(st)
	e := policy.New(st, "p", ReferenceValueBuiltin(rv))
	text := `package policy
import rego.v1
v := query_reference_value(input.name)
`
	if err := e.Set(ctx, "q", text); err != nil {
		t.Fatal(err)
	}
	payload, _ := json.Marshal(map[string]any{"obj": map[string]any{"a": []int{1, 2}}, "num": 7})
	msg, _ := json.Marshal(rvps.Message{Version: "0.1.0", Type: "sample", Payload: base64.StdEncoding.EncodeToString(payload)})
	if _, err := rv.Register(ctx, msg); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{"obj": `{"a":[1,2]}`, "num": `7`, "missing": `null`} {
		out, err := e.Eval(ctx, "q", "data.policy.v", map[string]any{"name": name}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if b, _ := json.Marshal(out); string(b) != want {
			t.Errorf("query_reference_value(%q) = %s, want %s", name, b, want)
		}
	}
	// A non-string name is a type error at compile time.
	if err := e.Set(ctx, "bad", "package policy\nimport rego.v1\nv := query_reference_value(1)\n"); !errors.Is(err, policy.ErrInvalid) {
		t.Errorf("non-string name: %v", err)
	}
	// A non-string input name fails evaluation, it does not match anything.
	if _, err := e.Eval(ctx, "q", "data.policy.v", map[string]any{"name": 3}, nil); err == nil {
		t.Error("numeric name evaluated")
	}
}

func TestDefaultPolicyIsTrusteeCompatible(t *testing.T) {
	// The default policy is valid Rego of package policy, producing
	// trust_claims, and reads the reference values by Trustee's names.
	if _, err := policy.Parse("default_cpu", DefaultCPUPolicy); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"launch_digest", "svn", "major_version", "minimum_minor_version",
		"snp_launch_measurement", "snp_bootloader", "snp_microcode", "snp_snp_svn", "snp_tee_svn",
		"mr_td", "rtmr_1", "rtmr_2", "xfam", "trusted_aks", "tpm_pcr11"} {
		if !strings.Contains(DefaultCPUPolicy, `query_reference_value("`+name+`")`) {
			t.Errorf("default policy does not query %q", name)
		}
	}
}
