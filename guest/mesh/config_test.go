package mesh

import (
	"errors"
	"strings"
	"testing"
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
		"allow = [" + strings.Repeat("\"spiffe://a/b\",", 5000) + "]",
	} {
		if _, err := ParseConfig(bad); !errors.Is(err, ErrBadConfig) {
			t.Errorf("%.60q: %v, want ErrBadConfig", bad, err)
		}
	}
}

func FuzzParseConfig(f *testing.F) {
	f.Add("allow = [\"spiffe://example.org/a\"]\ninbound_ports = [8080]\n[[outbound]]\ncidr = \"10.96.0.0/12\"\nports = [80]\n")
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
