package config

import (
	"errors"
	"testing"
)

const upstream = `
socket = "unix:///run/confidential-containers/cdh.sock"

[aa]
aa_socket = "unix:///run/confidential-containers/attestation-agent/attestation-agent.sock"

[kbc]
name = "cc_kbc"
url = "http://example.io:8080"

[[credentials]]
path = "/run/confidential-containers/cdh/kbs/test/file"
resource_uri = "kbs:///default/test/file"

[image]
max_concurrent_layer_downloads_per_image = 3
image_security_policy_uri = "kbs:///default/security-policy/test"
work_dir = "/run/image-rs"

[image.registry_config]
unqualified-search-registries = ["docker.io"]

[[image.registry_config.registry]]
prefix = "example.com/banned"
blocked = true

[image.image_pull_proxy]
https_proxy = "http://127.0.0.1:5432"

[log]
level = "info"
`

func TestParse(t *testing.T) {
	c, err := Parse([]byte(upstream))
	if err != nil {
		t.Fatal(err)
	}
	if c.KBC.URL != "http://example.io:8080" || len(c.Credentials) != 1 || c.Image.ImagePullProxy.HTTPSProxy == "" ||
		c.Image.ImageSecurityPolicyURI != "kbs:///default/security-policy/test" {
		t.Fatalf("%+v", c)
	}
	min, err := Parse([]byte("[kbc]\nname = \"cc_kbc\"\nurl = \"https://kbs\"\n"))
	if err != nil || min.Socket != DefaultSocket || min.AA.Socket != DefaultAASocket {
		t.Fatalf("defaults: %+v, %v", min, err)
	}
	if min.Image.MaxUnpackedSizeMiB != 0 {
		t.Errorf("max_unpacked_size_mib defaults to %d, want 0 (from the space left)", min.Image.MaxUnpackedSizeMiB)
	}
	if c, err := Parse([]byte("[kbc]\nname = \"cc_kbc\"\nurl = \"https://kbs\"\n[image]\nmax_unpacked_size_mib = 2048\n")); err != nil ||
		c.Image.MaxUnpackedSizeMiB != 2048 {
		t.Errorf("max_unpacked_size_mib: %+v, %v", c, err)
	}
	for name, c := range map[string]struct {
		toml string
		want error
	}{
		"syntax":        {"[kbc", ErrInvalid},
		"kbc name":      {"[kbc]\nname = \"offline_fs_kbc\"\nurl = \"http://k\"", ErrInvalid},
		"url":           {"[kbc]\nname = \"cc_kbc\"\nurl = \"ftp://k\"", ErrInvalid},
		"no kbc":        {"socket = \"unix:///x\"", ErrInvalid},
		"typo":          {"[kbc]\nname = \"cc_kbc\"\nurl = \"http://k\"\nkbs_certs = \"x\"", ErrUnknownKey},
		"socket":        {"socket = \"127.0.0.1:1\"\n[kbc]\nname = \"cc_kbc\"\nurl = \"http://k\"", ErrInvalid},
		"cred escape":   {"[kbc]\nname = \"cc_kbc\"\nurl = \"http://k\"\n[[credentials]]\npath = \"/run/confidential-containers/cdh/kbs/../../etc/x\"\nresource_uri = \"kbs:///a/b/c\"", ErrInvalid},
		"unpacked size": {"[kbc]\nname = \"cc_kbc\"\nurl = \"http://k\"\n[image]\nmax_unpacked_size_mib = -2", ErrInvalid},
		"cred uri":      {"[kbc]\nname = \"cc_kbc\"\nurl = \"http://k\"\n[[credentials]]\npath = \"/run/confidential-containers/cdh/kbs/x\"\nresource_uri = \"a/b/c\"", ErrInvalid},
	} {
		if _, err := Parse([]byte(c.toml)); !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", name, err, c.want)
		}
	}
}

func TestKBCParams(t *testing.T) {
	p, ok := KBCParamsFromCmdline("console=ttyS0 agent.aa_kbc_params=cc_kbc::http://10.0.2.2:8080 quiet")
	if !ok || p != "cc_kbc::http://10.0.2.2:8080" {
		t.Fatalf("%q %v", p, ok)
	}
	if c, err := FromKBCParams(p); err != nil || c.KBC.URL != "http://10.0.2.2:8080" {
		t.Fatalf("%+v %v", c, err)
	}
	if _, err := FromKBCParams("cc_kbc"); !errors.Is(err, ErrInvalid) {
		t.Fatal(err)
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(upstream))
	f.Add([]byte("[kbc]\nname = \"cc_kbc\"\nurl = \"http://k\""))
	f.Fuzz(func(t *testing.T, b []byte) {
		if _, err := Parse(b); err != nil && !errors.Is(err, ErrInvalid) && !errors.Is(err, ErrUnknownKey) {
			t.Fatalf("untyped error: %v", err)
		}
	})
}
