package signature

import (
	"fmt"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	"gopkg.in/yaml.v3"
)

// Lookaside says where GPG signatures of images live: containers/image's
// registries.d configuration (what [image] sigstore_config_uri names), a
// base URL per docker scope, the most specific scope winning.
type Lookaside struct {
	Default scopeConfig            `yaml:"default-docker"`
	Docker  map[string]scopeConfig `yaml:"docker"`
}

type scopeConfig struct {
	Lookaside string `yaml:"lookaside"`
	// Sigstore is the older name of lookaside.
	Sigstore string `yaml:"sigstore"`
	// The staging keys name where signers write; readers ignore them.
	LookasideStaging       string `yaml:"lookaside-staging"`
	SigstoreStaging        string `yaml:"sigstore-staging"`
	UseSigstoreAttachments bool   `yaml:"use-sigstore-attachments"`
}

func (s scopeConfig) url() string {
	if s.Lookaside != "" {
		return s.Lookaside
	}
	return s.Sigstore
}

// ParseLookaside parses a registries.d document.
func ParseLookaside(b []byte) (*Lookaside, error) {
	if len(b) > MaxPolicySize {
		return nil, fmt.Errorf("%w: registries.d document of %d bytes", ErrInvalidPolicy, len(b))
	}
	var l Lookaside
	dec := yaml.NewDecoder(strings.NewReader(string(b)))
	dec.KnownFields(true)
	if err := dec.Decode(&l); err != nil {
		return nil, fmt.Errorf("%w: registries.d: %v", ErrInvalidPolicy, err)
	}
	for _, s := range append([]scopeConfig{l.Default}, mapValues(l.Docker)...) {
		if u := s.url(); u != "" && !strings.HasPrefix(u, "http://") && !strings.HasPrefix(u, "https://") {
			return nil, fmt.Errorf("%w: lookaside %q is not an http(s) URL", ErrInvalidPolicy, u)
		}
	}
	return &l, nil
}

func mapValues(m map[string]scopeConfig) []scopeConfig {
	var out []scopeConfig
	for _, v := range m {
		out = append(out, v)
	}
	return out
}

// URLs lists the signature URLs of an image's manifest digest, signature-1
// upwards (containers/image's lookaside layout), or nil without a
// lookaside for ref.
func (l *Lookaside) URLs(ref name.Reference, d fmt.Stringer, n int) []string {
	base := l.Default.url()
	for _, s := range scopeCandidates(ref) {
		if c, ok := l.Docker[s]; ok && c.url() != "" {
			base = c.url()
			break
		}
	}
	if base == "" {
		return nil
	}
	dir := fmt.Sprintf("%s/%s@%s", strings.TrimSuffix(base, "/"), ref.Context().RepositoryStr(), strings.Replace(d.String(), ":", "=", 1))
	urls := make([]string, n)
	for i := range urls {
		urls[i] = fmt.Sprintf("%s/signature-%d", dir, i+1)
	}
	return urls
}
