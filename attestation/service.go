// Package attestation is the attestation service: it has evidence checked
// by the TEE's verifier, appraises the claims with the attestation policy
// (Rego, reference values from the RVPS) and issues an EAR token.
package attestation

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/cocoon-cc/cocoon/attestation/ear"
	"github.com/cocoon-cc/cocoon/attestation/verifier"
	"github.com/cocoon-cc/cocoon/initdata"
	"github.com/cocoon-cc/cocoon/policy"
	"github.com/cocoon-cc/cocoon/protocol"
)

// DefaultPolicyID is the policy id used when a request names none; the
// policy evaluated is "<id>_<device class>", e.g. default_cpu.
const DefaultPolicyID = "default"

// Errors of the attestation service.
var (
	ErrNoEvidence      = errors.New("no evidence to verify")
	ErrRuntimeData     = errors.New("invalid runtime data")
	ErrHashAlgorithm   = errors.New("unsupported runtime data hash algorithm")
	ErrChallenge       = errors.New("nonce does not match the session's challenge")
	ErrNoTrustClaims   = errors.New("the attestation policy set no trust claim")
	ErrBadTrustClaims  = errors.New("the attestation policy returned malformed trust claims")
	ErrVerification    = errors.New("evidence verification failed")
	ErrPolicyEvaluated = errors.New("attestation policy evaluation failed")
)

// InitData is the initdata a request is bound to: the TOML document (whose
// claims then reach the policy) or only its digest.
type InitData struct {
	TOML   []byte
	Digest []byte
}

// Request is one piece of evidence to verify.
type Request struct {
	Tee      protocol.Tee
	Evidence json.RawMessage
	// RuntimeData is hashed as canonical JSON (RFC 8785) into the expected
	// report data; RawRuntimeData is used as the report data as is.
	RuntimeData    map[string]any
	RawRuntimeData []byte
	// HashAlgorithm is sha256, sha384 (default) or sha512.
	HashAlgorithm string
	InitData      *InitData
}

// Config tunes the service.
type Config struct {
	TokenDuration time.Duration
	Issuer        string
	// Verbose keeps the additional evidence in the token's runtime claims.
	Verbose bool
}

// Service verifies evidence and issues EAR tokens.
type Service struct {
	verifiers verifier.Registry
	policies  *policy.Engine
	signer    *ear.Signer
	cfg       Config
	now       func() time.Time
}

// New wires a Service. policies must have been created with the
// query_reference_value builtin (see ReferenceValueBuiltin).
func New(verifiers verifier.Registry, policies *policy.Engine, signer *ear.Signer, cfg Config) *Service {
	if cfg.TokenDuration <= 0 {
		cfg.TokenDuration = 5 * time.Minute
	}
	if cfg.Issuer == "" {
		cfg.Issuer = "cocoon-attestation-service"
	}
	return &Service{verifiers: verifiers, policies: policies, signer: signer, cfg: cfg, now: time.Now}
}

// Policies exposes the attestation policy store.
func (s *Service) Policies() *policy.Engine { return s.policies }

// Signer is the token signer (its public key is published as JWKS).
func (s *Service) Signer() *ear.Signer { return s.signer }

// Challenge is the challenge a guest of tee answers in the session whose
// nonce is base: base itself, unless the TEE's verifier issues its own.
func (s *Service) Challenge(ctx context.Context, tee protocol.Tee, base string) (string, error) {
	if c, ok := s.verifiers[tee].(verifier.Challenger); ok {
		return c.Challenge(ctx, base)
	}
	return base, nil
}

// CheckChallenge reports whether nonce is the challenge of the session
// whose nonce is base.
func (s *Service) CheckChallenge(tee protocol.Tee, nonce, base string) error {
	if c, ok := s.verifiers[tee].(verifier.Challenger); ok {
		return c.CheckChallenge(nonce, base)
	}
	if !hmac.Equal([]byte(nonce), []byte(base)) {
		return ErrChallenge
	}
	return nil
}

// Evaluate verifies every request, appraises the claims with policy
// "<policyID>_<class>" and returns the signed token and its claims.
func (s *Service) Evaluate(ctx context.Context, reqs []Request, policyID string) (string, *ear.Claims, error) {
	if len(reqs) == 0 {
		return "", nil, ErrNoEvidence
	}
	if policyID == "" {
		policyID = DefaultPolicyID
	}
	submods := map[string]ear.Appraisal{}
	index := map[string]int{}
	for _, r := range reqs {
		annotated, err := s.verify(ctx, r)
		if err != nil {
			return "", nil, err
		}
		for _, a := range annotated {
			ap, err := s.appraise(ctx, policyID, a)
			if err != nil {
				return "", nil, err
			}
			submods[fmt.Sprintf("%s%d", a.class, index[a.class])] = *ap
			index[a.class]++
		}
	}
	now := s.now()
	claims := &ear.Claims{
		Profile:    ear.Profile,
		IssuedAt:   now.Unix(),
		Expiry:     now.Add(s.cfg.TokenDuration).Unix(),
		Issuer:     s.cfg.Issuer,
		VerifierID: ear.VerifierID{Developer: "https://github.com/cocoon-cc/cocoon", Build: "cocoon-attestation-service"},
		Submods:    submods,
	}
	tok, err := s.signer.Sign(claims)
	if err != nil {
		return "", nil, err
	}
	return tok, claims, nil
}

type annotatedClaims struct {
	class  string
	claims map[string]any
}

// verify runs the TEE's verifier and shapes each result as Trustee's
// annotated evidence: the TEE's claims under its name, with report data,
// initdata and their claims lifted beside it.
func (s *Service) verify(ctx context.Context, r Request) ([]annotatedClaims, error) {
	v, err := s.verifiers.Lookup(r.Tee)
	if err != nil {
		return nil, err
	}
	reportData, runtimeClaims, err := r.reportData()
	if err != nil {
		return nil, err
	}
	want := verifier.Expected{ReportData: reportData}
	var initClaims any
	if r.InitData != nil {
		want.InitDataDigest = r.InitData.Digest
		if r.InitData.TOML != nil {
			digest, doc, err := initdata.Digest(r.InitData.TOML)
			if err != nil {
				return nil, err
			}
			want.InitDataDigest, initClaims = digest, doc.Claims()
		}
	}
	results, err := v.Evaluate(ctx, r.Evidence, want)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrVerification, r.Tee, err)
	}
	if runtimeClaims != nil && !s.cfg.Verbose {
		delete(runtimeClaims, "additional-evidence")
	}
	out := make([]annotatedClaims, 0, len(results))
	for _, tc := range results {
		tee := map[string]any(tc.Claims)
		a := map[string]any{}
		if v, ok := tee["init_data"]; ok {
			a["init_data"], a["init_data_claims"] = v, initClaims
			delete(tee, "init_data")
		}
		if v, ok := tee["report_data"]; ok {
			a["report_data"], a["runtime_data_claims"] = v, runtimeClaims
			delete(tee, "report_data")
		}
		a[string(r.Tee)] = tee
		out = append(out, annotatedClaims{class: tc.Class, claims: a})
	}
	return out, nil
}

// reportData is the digest the evidence must carry: the hash of the
// runtime data's RFC 8785 canonical JSON, or the raw runtime data.
func (r Request) reportData() ([]byte, map[string]any, error) {
	if r.RuntimeData == nil {
		return r.RawRuntimeData, nil, nil
	}
	canon, err := protocol.CanonicalJSON(r.RuntimeData)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %v", ErrRuntimeData, err)
	}
	sum, err := Hash(r.HashAlgorithm, canon)
	if err != nil {
		return nil, nil, err
	}
	// The claims are a copy: the caller's map stays as it was.
	claims := make(map[string]any, len(r.RuntimeData))
	for k, v := range r.RuntimeData {
		claims[k] = v
	}
	return sum, claims, nil
}

// Hash digests b with a runtime-data hash algorithm ("" means sha384).
func Hash(alg string, b []byte) ([]byte, error) {
	switch alg {
	case "", "sha384":
		s := sha512.Sum384(b)
		return s[:], nil
	case "sha256":
		s := sha256.Sum256(b)
		return s[:], nil
	case "sha512":
		s := sha512.Sum512(b)
		return s[:], nil
	}
	return nil, fmt.Errorf("%w: %q", ErrHashAlgorithm, alg)
}

// appraise evaluates the class's attestation policy over the claims.
func (s *Service) appraise(ctx context.Context, policyID string, a annotatedClaims) (*ear.Appraisal, error) {
	id := policyID + "_" + a.class
	raw, err := encodeClaims(a.claims)
	if err != nil {
		return nil, err
	}
	// The policy reads the claims themselves: OPA converts the Go values it
	// reaches as encoding/json would (those of other types through JSON).
	out, err := s.policies.Eval(ctx, id, "data.policy.trust_claims", a.claims, nil)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrPolicyEvaluated, id, err)
	}
	var tv ear.TrustVector
	if out != nil {
		m, ok := out.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("%w: %T", ErrBadTrustClaims, out)
		}
		for name, v := range m {
			n, ok := v.(json.Number)
			iv, err := n.Int64()
			if !ok || err != nil || iv < -128 || iv > 127 || !tv.Set(name, int(iv)) {
				return nil, fmt.Errorf("%w: %s = %v", ErrBadTrustClaims, name, v)
			}
		}
	}
	if !tv.AnySet() {
		return nil, fmt.Errorf("%w (policy %s)", ErrNoTrustClaims, id)
	}
	return &ear.Appraisal{Status: tv.Status(), TrustVector: tv, PolicyID: policyID, AnnotatedEvidence: raw}, nil
}

// encodeClaims encodes each claim as the token's annotated evidence. Claims
// of runtime data's shape (objects of strings, most of them) are written
// directly: encoding/json's reflection was a tenth of the KBS's non-crypto
// CPU per attestation.
func encodeClaims(m map[string]any) (map[string]json.RawMessage, error) {
	raw := make(map[string]json.RawMessage, len(m))
	for k, v := range m {
		if m, isMap := v.(map[string]any); !isMap || m != nil { // a nil map is null
			if b, ok := protocol.AppendCanonical(nil, v); ok {
				raw[k] = b
				continue
			}
		}
		b, err := json.Marshal(v)
		if err != nil {
			return nil, fmt.Errorf("attestation: claim %s: %w", k, err)
		}
		raw[k] = b
	}
	return raw, nil
}
