// Package signature enforces an image signature policy in the guest before
// any layer of an image is fetched. The policy is containers/image's
// policy.json (containers-policy.json(5)): a default and, for the docker
// transport, requirements per scope, the most specific scope winning.
// Requirements: insecureAcceptAnything, reject, sigstoreSigned — a cosign
// signature (an ECDSA, RSA or Ed25519 signature over a "simple signing"
// payload naming the manifest digest), stored in the registry as the
// sha256-<digest>.sig attachment cosign writes — and signedBy: a GPG
// signed message of that payload, read from the lookaside server a
// registries.d document names (skopeo copy --sign-by writes them).
package signature

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
)

// Errors of the signature policy.
var (
	ErrInvalidPolicy     = errors.New("invalid image signature policy")
	ErrRejected          = errors.New("image rejected by the signature policy")
	ErrSignatureRequired = errors.New("image is not signed as the policy requires")
	ErrSignatureInvalid  = errors.New("no image signature is valid for the policy")
	ErrUnsupported       = errors.New("unsupported signature requirement")
)

// MaxPolicySize bounds policy.json.
const MaxPolicySize = 1 << 20

// Requirement is one policy requirement.
type Requirement struct {
	Type string `json:"type"`
	// Keys: signedBy's GPG keyrings, sigstoreSigned's public keys; a path
	// may be a kbs:/// resource; data is base64.
	KeyType  string   `json:"keyType,omitempty"`
	KeyPath  string   `json:"keyPath,omitempty"`
	KeyPaths []string `json:"keyPaths,omitempty"`
	KeyData  string   `json:"keyData,omitempty"`
	KeyDatas []string `json:"keyDatas,omitempty"`
	// sigstoreSigned's certificate and transparency log roots: parsed so
	// that such a policy loads, refused with ErrUnsupported where it
	// applies (never ignored).
	Fulcio              json.RawMessage `json:"fulcio,omitempty"`
	PKI                 json.RawMessage `json:"pki,omitempty"`
	RekorPublicKeyPath  string          `json:"rekorPublicKeyPath,omitempty"`
	RekorPublicKeyPaths []string        `json:"rekorPublicKeyPaths,omitempty"`
	RekorPublicKeyData  string          `json:"rekorPublicKeyData,omitempty"`
	RekorPublicKeyDatas []string        `json:"rekorPublicKeyDatas,omitempty"`
	SignedIdentity      *Identity       `json:"signedIdentity,omitempty"`
}

// Identity is a signedIdentity: which references a signature may name.
type Identity struct {
	Type             string `json:"type"`
	DockerReference  string `json:"dockerReference,omitempty"`  // exactReference
	DockerRepository string `json:"dockerRepository,omitempty"` // exactRepository
	Prefix           string `json:"prefix,omitempty"`           // remapIdentity
	SignedPrefix     string `json:"signedPrefix,omitempty"`     // remapIdentity
}

// Requirement and identity types.
const (
	InsecureAcceptAnything = "insecureAcceptAnything"
	Reject                 = "reject"
	SigstoreSigned         = "sigstoreSigned"
	SignedBy               = "signedBy"

	MatchRepoDigestOrExact = "matchRepoDigestOrExact"
	MatchRepository        = "matchRepository"
	MatchExact             = "matchExact"
	ExactReference         = "exactReference"
	ExactRepository        = "exactRepository"
	RemapIdentity          = "remapIdentity"
)

// Policy is a parsed policy.json.
type Policy struct {
	Default    []Requirement                       `json:"default"`
	Transports map[string]map[string][]Requirement `json:"transports"`
}

// ParsePolicy parses and checks policy.json.
func ParsePolicy(b []byte) (*Policy, error) {
	if len(b) > MaxPolicySize {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrInvalidPolicy, len(b), MaxPolicySize)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var p Policy
	if err := dec.Decode(&p); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidPolicy, err)
	}
	if len(p.Default) == 0 {
		return nil, fmt.Errorf("%w: no default requirement", ErrInvalidPolicy)
	}
	check := func(where string, reqs []Requirement) error {
		if len(reqs) == 0 {
			return fmt.Errorf("%w: %s: no requirement", ErrInvalidPolicy, where)
		}
		for _, r := range reqs {
			if err := r.check(); err != nil {
				return fmt.Errorf("%w: %s: %v", ErrInvalidPolicy, where, err)
			}
		}
		return nil
	}
	if err := check("default", p.Default); err != nil {
		return nil, err
	}
	for transport, scopes := range p.Transports {
		for scope, reqs := range scopes {
			if err := check(transport+" "+scope, reqs); err != nil {
				return nil, err
			}
		}
	}
	return &p, nil
}

func (r Requirement) check() error {
	keys := count(r.KeyPath != "", len(r.KeyPaths) > 0, r.KeyData != "", len(r.KeyDatas) > 0)
	roots := count(len(r.Fulcio) > 0, len(r.PKI) > 0)
	rekor := count(r.RekorPublicKeyPath != "", len(r.RekorPublicKeyPaths) > 0, r.RekorPublicKeyData != "", len(r.RekorPublicKeyDatas) > 0)
	switch r.Type {
	case InsecureAcceptAnything, Reject:
		return nil
	case SignedBy:
		if keys != 1 || len(r.KeyDatas) > 0 || roots+rekor > 0 {
			return errors.New("signedBy needs exactly one of keyPath, keyPaths and keyData")
		}
	case SigstoreSigned:
		if keys+roots != 1 || rekor > 1 {
			return errors.New("sigstoreSigned needs exactly one of keyPath, keyPaths, keyData, keyDatas, fulcio and pki, and at most one rekor key field")
		}
	default:
		return fmt.Errorf("unknown requirement type %q", r.Type)
	}
	if r.SignedIdentity != nil {
		return r.SignedIdentity.check()
	}
	return nil
}

func count(set ...bool) int {
	n := 0
	for _, b := range set {
		if b {
			n++
		}
	}
	return n
}

// Requirements are the requirements for ref (docker transport): the most
// specific scope that matches — the reference itself, its repository, each
// enclosing namespace, its registry, a *.domain wildcard — else the
// transport's default scope "", else the policy's default.
func (p *Policy) Requirements(ref name.Reference) []Requirement {
	scopes := p.Transports["docker"]
	for _, s := range scopeCandidates(ref) {
		if reqs, ok := scopes[s]; ok {
			return reqs
		}
	}
	return p.Default
}

func scopeCandidates(ref name.Reference) []string {
	d := toDockerRef(ref)
	out := []string{d.String()}
	path := d.repo
	for {
		out = append(out, path)
		i := strings.LastIndex(path, "/")
		if i < 0 {
			break
		}
		path = path[:i]
	}
	host, _, _ := strings.Cut(d.repo, "/")
	host, _, _ = strings.Cut(host, ":")
	for labels := strings.Split(host, "."); len(labels) > 1; labels = labels[1:] {
		out = append(out, "*."+strings.Join(labels[1:], "."))
	}
	return append(out, "")
}
