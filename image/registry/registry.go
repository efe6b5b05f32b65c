// Package registry maps an image reference to the places it may be pulled
// from, following containers-registries.conf(5) version 2 (mirrors,
// prefixes, insecure and blocked registries), and finds credentials in
// containers-auth.json(5) files.
package registry

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/BurntSushi/toml"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
)

// ErrBlocked: registries.conf blocks the reference's registry.
var ErrBlocked = errors.New("registry is blocked by registries.conf")

// ErrInvalid is returned for an auth.json that does not parse.
var ErrInvalid = errors.New("invalid registry configuration")

// Config is a registries.conf.
type Config struct {
	Registries []Registry `toml:"registry"`
}

// Registry is one [[registry]] table.
type Registry struct {
	Prefix   string   `toml:"prefix"`
	Location string   `toml:"location"`
	Insecure bool     `toml:"insecure"`
	Blocked  bool     `toml:"blocked"`
	Mirrors  []Mirror `toml:"mirror"`
}

// Mirror is one [[registry.mirror]] table.
type Mirror struct {
	Location string `toml:"location"`
	Insecure bool   `toml:"insecure"`
	// PullFromMirror is "all" (default), "digest-only" or "tag-only".
	PullFromMirror string `toml:"pull-from-mirror"`
}

// Parse reads registries.conf text.
func Parse(b []byte) (*Config, error) {
	var c Config
	if _, err := toml.Decode(string(b), &c); err != nil {
		return nil, fmt.Errorf("registries.conf: %w", err)
	}
	for i, r := range c.Registries {
		if r.Prefix == "" {
			c.Registries[i].Prefix = r.Location
		}
		if c.Registries[i].Prefix == "" {
			return nil, fmt.Errorf("registries.conf: registry %d has neither prefix nor location", i)
		}
	}
	return &c, nil
}

// Source is one place to pull a reference from.
type Source struct {
	Ref name.Reference
}

// Sources lists where ref may be pulled from, mirrors first, for a nil
// Config just ref itself.
func (c *Config) Sources(ref string) ([]Source, error) {
	parsed, err := name.ParseReference(ref)
	if err != nil {
		return nil, err
	}
	r := c.match(parsed)
	if r == nil {
		return []Source{{Ref: parsed}}, nil
	}
	if r.Blocked {
		return nil, fmt.Errorf("%w: %s", ErrBlocked, ref)
	}
	_, byDigest := parsed.(name.Digest)
	var out []Source
	for _, m := range r.Mirrors {
		if (m.PullFromMirror == "digest-only" && !byDigest) || (m.PullFromMirror == "tag-only" && byDigest) {
			continue
		}
		s, err := rewrite(parsed, r.Prefix, m.Location, m.Insecure)
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	loc := r.Location
	if loc == "" {
		loc = r.Prefix
	}
	s, err := rewrite(parsed, r.Prefix, loc, r.Insecure)
	if err != nil {
		return nil, err
	}
	return append(out, s), nil
}

// match finds the registry with the longest prefix matching ref.
func (c *Config) match(ref name.Reference) *Registry {
	if c == nil {
		return nil
	}
	full := ref.Context().Name()
	var best *Registry
	for i := range c.Registries {
		r := &c.Registries[i]
		p := r.Prefix
		if full == p || strings.HasPrefix(full, p+"/") || strings.HasPrefix(full, p+":") {
			if best == nil || len(p) > len(best.Prefix) {
				best = r
			}
		}
	}
	return best
}

// rewrite replaces prefix with location in ref's repository.
func rewrite(ref name.Reference, prefix, location string, insecure bool) (Source, error) {
	repo := location + strings.TrimPrefix(ref.Context().Name(), prefix)
	var opts []name.Option
	if insecure {
		opts = append(opts, name.Insecure)
	}
	sep := ":"
	if _, ok := ref.(name.Digest); ok {
		sep = "@"
	}
	r, err := name.ParseReference(repo+sep+ref.Identifier(), opts...)
	if err != nil {
		return Source{}, fmt.Errorf("rewrite %s for %s: %w", ref, location, err)
	}
	return Source{Ref: r}, nil
}

// AuthFile is a containers-auth.json (the Docker config.json "auths" form).
type AuthFile struct {
	Auths map[string]struct {
		Auth string `json:"auth"`
	} `json:"auths"`
}

// LoadAuthFile reads an auth.json file.
func LoadAuthFile(path string) (*AuthFile, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	a, err := ParseAuthFile(b)
	if err != nil {
		return nil, fmt.Errorf("auth file %s: %w", path, err)
	}
	return a, nil
}

// ParseAuthFile parses auth.json text (e.g. a KBS resource).
func ParseAuthFile(b []byte) (*AuthFile, error) {
	var a AuthFile
	if err := json.Unmarshal(b, &a); err != nil {
		return nil, fmt.Errorf("%w: auth file: %v", ErrInvalid, err)
	}
	return &a, nil
}

// Resolve implements authn.Keychain: the most specific entry (host/repo
// before host) wins; no entry means anonymous.
func (a *AuthFile) Resolve(res authn.Resource) (authn.Authenticator, error) {
	keys := []string{res.String(), res.RegistryStr()}
	if r, ok := res.(name.Repository); ok {
		keys = []string{r.Name(), r.RegistryStr()}
		for p := r.RepositoryStr(); strings.Contains(p, "/"); {
			p = p[:strings.LastIndex(p, "/")]
			keys = append(keys[:len(keys)-1], r.RegistryStr()+"/"+p, r.RegistryStr())
		}
	}
	for _, k := range keys {
		e, ok := a.Auths[k]
		if !ok {
			continue
		}
		raw, err := base64.StdEncoding.DecodeString(e.Auth)
		if err != nil {
			return nil, fmt.Errorf("auth for %s is not base64", k)
		}
		user, pass, ok := strings.Cut(string(raw), ":")
		if !ok {
			return nil, fmt.Errorf("auth for %s is not user:password", k)
		}
		return authn.FromConfig(authn.AuthConfig{Username: user, Password: pass}), nil
	}
	return authn.Anonymous, nil
}
