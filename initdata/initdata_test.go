package initdata_test

import (
	"bytes"
	"crypto/sha256"
	"crypto/sha512"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/cocoon-cc/cocoon/initdata"
)

// doc is initdata as Kata's genpolicy/CoCo tooling writes it.
func doc(alg string) string {
	return `version = "0.1.0"
algorithm = "` + alg + `"

[data]
"aa.toml" = '''
[token_configs]
[token_configs.kbs]
url = "http://kbs.example:8080"
cert = ""
'''

"cdh.toml" = '''
socket = 'unix:///run/confidential-containers/cdh.sock'
credentials = []

[kbc]
name = "cc_kbc"
url = "http://kbs.example:8080"

[image]
image_security_policy_uri = "kbs:///default/security-policy/test"
'''

"policy.rego" = '''
package agent_policy

default AllowRequestsFailingPolicy := true
'''
`
}

func TestDigestKnownAnswers(t *testing.T) {
	for _, c := range []struct {
		alg  string
		sum  func([]byte) []byte
		size int
	}{
		{"sha256", func(b []byte) []byte { s := sha256.Sum256(b); return s[:] }, 32},
		{"sha384", func(b []byte) []byte { s := sha512.Sum384(b); return s[:] }, 48},
		{"sha512", func(b []byte) []byte { s := sha512.Sum512(b); return s[:] }, 64},
	} {
		t.Run(c.alg, func(t *testing.T) {
			body := []byte(doc(c.alg))
			digest, d, err := initdata.Digest(body)
			if err != nil {
				t.Fatal(err)
			}
			if want := c.sum(body); !bytes.Equal(digest, want) {
				t.Errorf("digest %x, want %x", digest, want)
			}
			if len(digest) != c.size {
				t.Errorf("digest of %d bytes", len(digest))
			}
			if d.Version != "0.1.0" || d.Algorithm != c.alg || len(d.Data) != 3 {
				t.Errorf("document %+v", d)
			}
			parsed, err := initdata.Parse(body)
			if err != nil || !reflect.DeepEqual(parsed, d) {
				t.Errorf("Parse = %+v, %v", parsed, err)
			}
			// The digest is over the raw bytes: a semantically equal
			// document with other formatting has another digest.
			other, _, err := initdata.Digest(append(body, '\n'))
			if err != nil {
				t.Fatal(err)
			}
			if bytes.Equal(other, digest) {
				t.Error("digest does not depend on the raw bytes")
			}
		})
	}
	// A minimal document: the digest of exactly these bytes.
	min := []byte("version = \"0.1.0\"\nalgorithm = \"sha256\"\n")
	got, d, err := initdata.Digest(min)
	if err != nil {
		t.Fatal(err)
	}
	want := sha256.Sum256(min)
	if !bytes.Equal(got, want[:]) || len(d.Data) != 0 {
		t.Errorf("minimal document: %x %+v", got, d)
	}
}

func TestClaims(t *testing.T) {
	_, d, err := initdata.Digest([]byte(doc("sha384")))
	if err != nil {
		t.Fatal(err)
	}
	c := d.Claims()
	aa, ok := c["aa.toml"].(map[string]any)
	if !ok {
		t.Fatalf("aa.toml claim is %T", c["aa.toml"])
	}
	kbs := aa["token_configs"].(map[string]any)["kbs"].(map[string]any)
	if kbs["url"] != "http://kbs.example:8080" {
		t.Errorf("aa.toml token_configs.kbs = %v", kbs)
	}
	cdh, ok := c["cdh.toml"].(map[string]any)
	if !ok {
		t.Fatalf("cdh.toml claim is %T", c["cdh.toml"])
	}
	if cdh["kbc"].(map[string]any)["name"] != "cc_kbc" ||
		cdh["image"].(map[string]any)["image_security_policy_uri"] != "kbs:///default/security-policy/test" {
		t.Errorf("cdh.toml = %v", cdh)
	}
	if rego, ok := c["policy.rego"].(string); !ok || !strings.Contains(rego, "package agent_policy") {
		t.Errorf("policy.rego claim %v", c["policy.rego"])
	}

	// A .toml entry that is not TOML stays a string; other names too.
	d2, err := initdata.Parse([]byte("version = \"0.1.0\"\nalgorithm = \"sha256\"\n[data]\n\"aa.toml\" = \"this is = not [toml\"\n\"other.toml\" = \"a = 1\"\nplain = \"b = 2\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	c2 := d2.Claims()
	if c2["aa.toml"] != "this is = not [toml" {
		t.Errorf("bad aa.toml claim %v", c2["aa.toml"])
	}
	if c2["other.toml"] != "a = 1" {
		t.Errorf("other.toml claim %v: only aa.toml and cdh.toml are parsed, as Trustee does", c2["other.toml"])
	}
	if c2["plain"] != "b = 2" {
		t.Errorf("plain claim %v", c2["plain"])
	}
	// Claims do not change the document.
	if d2.Data["other.toml"] != "a = 1" {
		t.Error("Claims modified Data")
	}
	if got := (&initdata.Document{}).Claims(); len(got) != 0 {
		t.Errorf("empty document claims %v", got)
	}
}

func TestInvalid(t *testing.T) {
	cases := map[string]string{
		"empty":             "",
		"not TOML":          "version: 0.1.0",
		"no version":        "algorithm = \"sha256\"\n",
		"version 0.2.0":     "version = \"0.2.0\"\nalgorithm = \"sha256\"\n",
		"version number":    "version = 0.1\nalgorithm = \"sha256\"\n",
		"no algorithm":      "version = \"0.1.0\"\n",
		"algorithm sha-256": "version = \"0.1.0\"\nalgorithm = \"sha-256\"\n",
		"algorithm SHA384":  "version = \"0.1.0\"\nalgorithm = \"SHA384\"\n",
		"algorithm sha1":    "version = \"0.1.0\"\nalgorithm = \"sha1\"\n",
		"algorithm md5":     "version = \"0.1.0\"\nalgorithm = \"md5\"\n",
		"data not strings":  "version = \"0.1.0\"\nalgorithm = \"sha256\"\n[data]\nx = 1\n",
		"data nested table": "version = \"0.1.0\"\nalgorithm = \"sha256\"\n[data.sub]\nx = \"y\"\n",
		"data a string":     "version = \"0.1.0\"\nalgorithm = \"sha256\"\ndata = \"x\"\n",
		"data an array":     "version = \"0.1.0\"\nalgorithm = \"sha256\"\ndata = []\n",
		"data array tables": "version = \"0.1.0\"\nalgorithm = \"sha256\"\n[[data]]\nx = \"y\"\n",
		"duplicate key":     "version = \"0.1.0\"\nversion = \"0.1.0\"\nalgorithm = \"sha256\"\n",
		"oversize":          "version = \"0.1.0\"\nalgorithm = \"sha256\"\n" + strings.Repeat("# comment\n", initdata.MaxSize/10+1),
	}
	for name, body := range cases {
		if d, err := initdata.Parse([]byte(body)); !errors.Is(err, initdata.ErrInvalid) {
			t.Errorf("%s: Parse = %+v, %v; want ErrInvalid", name, d, err)
		}
		if digest, d, err := initdata.Digest([]byte(body)); !errors.Is(err, initdata.ErrInvalid) || digest != nil || d != nil {
			t.Errorf("%s: Digest = %x, %+v, %v; want ErrInvalid", name, digest, d, err)
		}
	}
	// Unknown top-level keys and tables are ignored, as upstream ignores
	// them; the known ones are still checked.
	for _, body := range []string{
		"version = \"0.1.0\"\nalgorithm = \"sha256\"\nextra = 1\n[data]\n\"aa.toml\" = \"x = 1\"\n",
		"version = \"0.1.0\"\nalgorithm = \"sha256\"\n[data]\n\"aa.toml\" = \"x = 1\"\n[other]\nx = [1, {y = \"z\"}]\n",
	} {
		if d, err := initdata.Parse([]byte(body)); err != nil || d.Data["aa.toml"] != "x = 1" {
			t.Errorf("unknown keys: %+v, %v", d, err)
		}
	}
	for _, body := range []string{
		"version = \"0.2.0\"\nalgorithm = \"sha256\"\nextra = 1\n",
		"version = \"0.1.0\"\nalgorithm = \"sha1\"\n[other]\nx = 1\n",
		"version = \"0.1.0\"\nalgorithm = \"sha256\"\nextra = 1\n[data]\nx = 1\n",
	} {
		if _, err := initdata.Parse([]byte(body)); !errors.Is(err, initdata.ErrInvalid) {
			t.Errorf("bad known keys beside unknown ones: %v", err)
		}
	}
	// An inline table is a table.
	if d, err := initdata.Parse([]byte("version = \"0.1.0\"\nalgorithm = \"sha256\"\ndata = {\"aa.toml\" = \"x = 1\"}\n")); err != nil || d.Data["aa.toml"] != "x = 1" {
		t.Errorf("inline data table: %+v, %v", d, err)
	}
	// Exactly MaxSize is still accepted.
	head := "version = \"0.1.0\"\nalgorithm = \"sha256\"\n#"
	body := head + strings.Repeat("x", initdata.MaxSize-len(head))
	if _, err := initdata.Parse([]byte(body)); err != nil {
		t.Errorf("document of MaxSize bytes: %v", err)
	}
}

// FuzzParse: arbitrary documents never panic; an accepted one has a known
// version and algorithm, and its digest is that algorithm over the bytes.
func FuzzParse(f *testing.F) {
	f.Add([]byte(doc("sha256")))
	f.Add([]byte(doc("sha384")))
	f.Add([]byte(doc("sha512")))
	f.Add([]byte("version = \"0.1.0\"\nalgorithm = \"sha256\"\n[data]\n\"aa.toml\" = \"[x\"\n"))
	f.Add([]byte("version = \"0.1.0\"\nalgorithm = \"sha1\"\n"))
	f.Add([]byte(""))
	f.Add([]byte("[data]\n\"cdh.toml\" = '''\n[[a]]\nb = 1979-05-27T07:32:00Z\n'''\n"))
	f.Fuzz(func(t *testing.T, body []byte) {
		digest, d, err := initdata.Digest(body)
		if err != nil {
			if !errors.Is(err, initdata.ErrInvalid) {
				t.Fatalf("untyped error %v", err)
			}
			return
		}
		if d.Version != initdata.Version {
			t.Fatalf("version %q accepted", d.Version)
		}
		var want []byte
		switch d.Algorithm {
		case "sha256":
			s := sha256.Sum256(body)
			want = s[:]
		case "sha384":
			s := sha512.Sum384(body)
			want = s[:]
		case "sha512":
			s := sha512.Sum512(body)
			want = s[:]
		default:
			t.Fatalf("algorithm %q accepted", d.Algorithm)
		}
		if !bytes.Equal(digest, want) {
			t.Fatalf("digest %x, want %x", digest, want)
		}
		claims := d.Claims()
		if len(claims) != len(d.Data) {
			t.Fatalf("%d claims for %d entries", len(claims), len(d.Data))
		}
	})
}

// genpolicyRego is shaped as Kata's genpolicy writes a policy: rules, then
// the policy_data object they read, last.
const genpolicyRego = `package agent_policy

import future.keywords.in

default CreateContainerRequest := false

CreateContainerRequest if {
	some c in policy_data.containers
	input.OCI.Process.Args == c.OCI.Process.Args
}

policy_data := {
  "containers": [
    {"OCI": {"Process": {"Args": ["/pause"]}}},
    {"OCI": {"Annotations": {"io.kubernetes.cri.image-name": "registry.example/app:1"},
             "Process": {"Args": ["/app", "--serve"]}}}
  ],
  "common": {"cpath": "/run/kata-containers/shared/containers", "sandbox_id": 12345678901234567890}
}
`

func TestAgentPolicyClaims(t *testing.T) {
	body := "version = \"0.1.0\"\nalgorithm = \"sha256\"\n[data]\n\"policy.rego\" = '''\n" + genpolicyRego + "'''\n"
	d, err := initdata.Parse([]byte(body))
	if err != nil {
		t.Fatal(err)
	}
	c := d.Claims()
	if _, ok := c["policy.rego"]; ok {
		t.Error("policy.rego kept beside agent_policy_claims")
	}
	pc, ok := c["agent_policy_claims"].(map[string]any)
	if !ok {
		t.Fatalf("agent_policy_claims %v", c["agent_policy_claims"])
	}
	args := pc["containers"].([]any)[1].(map[string]any)["OCI"].(map[string]any)["Process"].(map[string]any)["Args"].([]any)
	if len(args) != 2 || args[0] != "/app" {
		t.Errorf("containers[1].OCI.Process.Args = %v", args)
	}
	// Numbers keep every digit.
	if id := pc["common"].(map[string]any)["sandbox_id"]; fmt.Sprint(id) != "12345678901234567890" {
		t.Errorf("sandbox_id = %v", id)
	}

	// Policies without a trailing policy_data object stay as they are.
	for name, rego := range map[string]string{
		"no policy_data":     "package agent_policy\ndefault CreateContainerRequest := true\n",
		"rules after it":     genpolicyRego + "\nExecProcessRequest := true\n",
		"not JSON":           "package agent_policy\npolicy_data := {\"a\": input.x}\n",
		"unterminated":       "package agent_policy\npolicy_data := {\"a\": [1, 2}\n",
		"two objects":        "package agent_policy\npolicy_data := {} {}\n",
		"another assignment": "package agent_policy\npolicy_data = {\"a\": 1}\n",
	} {
		if v, ok := initdata.AgentPolicyData(rego); ok {
			t.Errorf("%s: policy data %v", name, v)
		}
		d := &initdata.Document{Data: map[string]string{"policy.rego": rego}}
		if c := d.Claims(); c["policy.rego"] != rego || c["agent_policy_claims"] != nil {
			t.Errorf("%s: claims %v", name, c)
		}
	}
}

func FuzzAgentPolicyData(f *testing.F) {
	f.Add(genpolicyRego)
	f.Add("policy_data := {}")
	f.Add("policy_data := {\"a\": 1} x")
	f.Fuzz(func(t *testing.T, rego string) {
		v, ok := initdata.AgentPolicyData(rego)
		if ok != (v != nil) {
			t.Fatalf("%v, %v", v, ok)
		}
	})
}
