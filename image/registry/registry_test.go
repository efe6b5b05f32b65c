package registry

import (
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
)

const conf = `
unqualified-search-registries = ["docker.io"]

[[registry]]
prefix = "example.com/team"
location = "internal.example:5000/mirror/team"
insecure = true

[[registry.mirror]]
location = "fast.example/team"

[[registry.mirror]]
location = "pinned.example/team"
pull-from-mirror = "digest-only"

[[registry]]
location = "example.com"

[[registry]]
location = "evil.example"
blocked = true
`

func sources(t *testing.T, c *Config, ref string) []string {
	t.Helper()
	ss, err := c.Sources(ref)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, s := range ss {
		out = append(out, s.Ref.Context().Scheme()+"://"+s.Ref.Name())
	}
	return out
}

func TestSources(t *testing.T) {
	c, err := Parse([]byte(conf))
	if err != nil {
		t.Fatal(err)
	}
	got := sources(t, c, "example.com/team/app:v1")
	want := []string{"https://fast.example/team/app:v1", "http://internal.example:5000/mirror/team/app:v1"}
	if len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
		t.Fatalf("tag: %v", got)
	}
	d := "@sha256:0000000000000000000000000000000000000000000000000000000000000000"
	if got := sources(t, c, "example.com/team/app"+d); len(got) != 3 || got[1] != "https://pinned.example/team/app"+d {
		t.Fatalf("digest: %v", got)
	}
	if got := sources(t, c, "example.com/other:v1"); len(got) != 1 || got[0] != "https://example.com/other:v1" {
		t.Fatalf("shorter prefix: %v", got)
	}
	if got := sources(t, c, "quay.io/org/app:v2"); len(got) != 1 || got[0] != "https://quay.io/org/app:v2" {
		t.Fatalf("unlisted: %v", got)
	}
	if _, err := c.Sources("evil.example/app:v1"); !errors.Is(err, ErrBlocked) {
		t.Fatalf("blocked: %v", err)
	}
	var nilConf *Config
	if got := sources(t, nilConf, "example.com/team/app:v1"); len(got) != 1 {
		t.Fatalf("no config: %v", got)
	}
}

func TestAuthFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "auth.json")
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	os.WriteFile(p, []byte(`{"auths":{"reg.example":{"auth":"`+b64("host:pw")+`"},
		"reg.example/team":{"auth":"`+b64("team:pw2")+`"}}}`), 0o600)
	a, err := LoadAuthFile(p)
	if err != nil {
		t.Fatal(err)
	}
	for repo, user := range map[string]string{"reg.example/team/app": "team", "reg.example/other": "host", "else.example/x": ""} {
		r, _ := name.NewRepository(repo)
		auth, err := a.Resolve(r)
		if err != nil {
			t.Fatal(err)
		}
		cfg, _ := auth.Authorization()
		if cfg.Username != user || (user == "" && auth != authn.Anonymous) {
			t.Errorf("%s: user %q, want %q", repo, cfg.Username, user)
		}
	}
}
