package mesh

import (
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

func TestParseConfig(t *testing.T) {
	c, err := ParseConfig("allow = [\"spiffe://example.org/a\"]\ninbound_ports = [8080]\n[[outbound]]\ncidr = \"10.96.0.9/12\"\nports = [80, 443]\n[[outbound]]\ncidr = \"10.0.0.0/8\"\n")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"-A COCO_MESH_IN ! -i lo -p tcp --dport 8080 -j REDIRECT --to-ports 15006",
		"-A COCO_MESH_OUT -m mark --mark 0x15c0 -j RETURN",
		"-A COCO_MESH_OUT -p tcp -d 10.96.0.0/12 --dport 443 -j REDIRECT --to-ports 15001",
		"-A COCO_MESH_OUT -p tcp -d 10.0.0.0/8 -j REDIRECT --to-ports 15001",
	}
	rules := c.Rules()
	for _, w := range want {
		if !strings.Contains(rules, w+"\n") {
			t.Errorf("rules lack %q:\n%s", w, rules)
		}
	}
	for _, bad := range []string{
		"",                         // nobody allowed
		"allow = [\"http://x/y\"]", // not a SPIFFE ID
		"allow = [\"spiffe://a/b\"]\nports = [1]", // unknown key
		"allow = [\"spiffe://a/b\"]\n[[outbound]]\ncidr = \"fd00::/8\"",
		"allow = [\"spiffe://a/b\"]\n[[outbound]]\ncidr = \"10.0.0.0/8\"\nports = [0]",
		"allow = [\"spiffe://a/b\"]\ninbound_ports = [70000]",
		"allow = [\"spiffe://a/b\"]\ninbound_port = 15001",
		"allow = [\"spiffe://a/b\"]\n[[outbound]]\ncidr = \"10.0.0.0/8\"\nallow = [\"https://a/b\"]", // a rule's ID not SPIFFE
		"allow = [\"spiffe://a/b\"]\n[[federate]]\ntrust_domain = \"Bad Domain\"\nbundle = \"\"",
		"allow = [\"spiffe://a/b\"]\n[[federate]]\ntrust_domain = \"istio.local\"\nbundle = \"not PEM\"",
		"allow = [" + strings.Repeat("\"spiffe://a/b\",", 5000) + "]",
	} {
		if _, err := ParseConfig(bad); !errors.Is(err, ErrBadConfig) {
			t.Errorf("%.60q: %v, want ErrBadConfig", bad, err)
		}
	}
}

// TestRuleAllowed: an outbound rule's own allow list replaces the global
// one for its destinations (a Service port names the workload behind it);
// the first matching rule decides.
func TestRuleAllowed(t *testing.T) {
	c, err := ParseConfig(`allow = ["spiffe://td/web"]
[[outbound]]
cidr = "10.96.0.0/24"
ports = [5432]
allow = ["spiffe://td/db"]
[[outbound]]
cidr = "10.96.0.0/16"
`)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		dst  string
		want []string
	}{
		{"10.96.0.7:5432", []string{"spiffe://td/db"}},
		{"10.96.0.7:80", []string{"spiffe://td/web"}},
		{"10.96.3.7:5432", []string{"spiffe://td/web"}},
		{"10.97.0.7:80", nil},
	} {
		var got []string
		if i := c.match(netip.MustParseAddrPort(tc.dst)); i >= 0 {
			for _, id := range c.ruleAllowed(i) {
				got = append(got, id.String())
			}
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("%s: allowed %v, want %v", tc.dst, got, tc.want)
		}
	}
	if !slices.Equal(c.Allowed(), []spiffeid.ID{spiffeid.RequireFromString("spiffe://td/web")}) {
		t.Errorf("inbound allow %v", c.Allowed())
	}
}

func FuzzParseConfig(f *testing.F) {
	f.Add("allow = [\"spiffe://example.org/a\"]\ninbound_ports = [8080]\n[[outbound]]\ncidr = \"10.96.0.0/12\"\nports = [80]\n")
	f.Add("allow = [\"spiffe://example.org/a\"]\n[[outbound]]\ncidr = \"10.0.0.0/8\"\nallow = [\"spiffe://td/db\"]\n" +
		"[[federate]]\ntrust_domain = \"cluster.local\"\nbundle = \"-----BEGIN CERTIFICATE-----\\nMA==\\n-----END CERTIFICATE-----\\n\"\n")
	f.Fuzz(func(t *testing.T, text string) {
		c, err := ParseConfig(text)
		if err != nil {
			if !errors.Is(err, ErrBadConfig) {
				t.Fatalf("untyped error %v", err)
			}
			return
		}
		if len(c.Allowed()) == 0 || !strings.HasSuffix(c.Rules(), "COMMIT\n") {
			t.Fatal("accepted config without IDs or rules")
		}
	})
}
