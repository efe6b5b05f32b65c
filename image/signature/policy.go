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
	// sigstoreSigned
	KeyPath        string    `json:"keyPath,omitempty"`
	KeyData        string    `json:"keyData,omitempty"` // base64 of the PEM public key
	SignedIdentity *Identity `json:"signedIdentity,omitempty"`
	// signedBy's (GPG) fields, read so that such a policy parses.
	KeyType  string   `json:"keyType,omitempty"`
	KeyPaths []string `json:"keyPaths,omitempty"`
}

// Identity is a signedIdentity: which references a signature may name.
type Identity struct {
	Type string `json:"type"`
	// The other identity types' fields, read so that such a policy parses.
	DockerReference  string `json:"dockerReference,omitempty"`
	DockerRepository string `json:"dockerRepository,omitempty"`
	Prefix           string `json:"prefix,omitempty"`
	SignedPrefix     string `json:"signedPrefix,omitempty"`
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
	switch r.Type {
	case InsecureAcceptAnything, Reject:
		return nil
	case SignedBy:
		if r.KeyData == "" && r.KeyPath == "" && len(r.KeyPaths) == 0 {
			return errors.New("signedBy needs keyPath, keyPaths or keyData")
		}
	case SigstoreSigned:
		if (r.KeyPath == "") == (r.KeyData == "") || len(r.KeyPaths) > 0 {
			return errors.New("sigstoreSigned needs exactly one of keyPath and keyData")
		}
	default:
		return fmt.Errorf("unknown requirement type %q", r.Type)
	}
	if id := r.SignedIdentity; id != nil {
		switch id.Type {
		case MatchRepoDigestOrExact, MatchRepository, MatchExact:
		default:
			return fmt.Errorf("signedIdentity %q is not supported", id.Type)
		}
	}
	return nil
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
	repo := ref.Context()
	var out []string
	if _, tagged := ref.(name.Tag); tagged {
		out = append(out, repo.Name()+":"+ref.Identifier())
	} else {
		out = append(out, repo.Name()+"@"+ref.Identifier())
	}
	path := repo.Name()
	for {
		out = append(out, path)
		i := strings.LastIndex(path, "/")
		if i < 0 {
			break
		}
		path = path[:i]
	}
	host := repo.RegistryStr()
	if h, _, ok := strings.Cut(host, ":"); ok {
		host = h
	}
	for labels := strings.Split(host, "."); len(labels) > 1; labels = labels[1:] {
		out = append(out, "*."+strings.Join(labels[1:], "."))
	}
	return append(out, "")
}
