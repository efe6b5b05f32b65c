package telemetry

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/cocoon-cc/cocoon/internal/testutil"
)

func testCA(t testing.TB) string {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	cert := testutil.Certificate(t, tmpl, tmpl, key.Public(), key)
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw}))
}

func TestParseConfig(t *testing.T) {
	ca := testCA(t)
	c, err := ParseConfig("endpoint = \"otel.example.org:4317\"\nca = '''" + ca + "'''\nship = [\"logs\"]\n")
	if err != nil {
		t.Fatal(err)
	}
	if c.ServerName != "otel.example.org" || !c.Ships(Logs) || c.Ships(Traces) || c.BufferBytes() != DefaultBufferMiB<<20 ||
		c.MetricsInterval != DefaultMetricsInterval || c.Roots() == nil {
		t.Errorf("defaults: %+v", c)
	}
	c, err = ParseConfig("endpoint = \"[::1]:4317\"\nserver_name = \"owner\"\nca = '''" + ca + "'''\nbuffer_mib = 2\nmetrics_interval = \"2s\"\n")
	if err != nil {
		t.Fatal(err)
	}
	if c.ServerName != "owner" || !c.Ships(Metrics) || c.BufferBytes() != 2<<20 || c.MetricsInterval != 2*time.Second {
		t.Errorf("explicit: %+v", c)
	}
	good := "endpoint = \"otel:4317\"\nca = '''" + ca + "'''\n"
	for _, bad := range []string{
		"",
		"ca = '''" + ca + "'''\n", // no endpoint
		"endpoint = \"otel\"\nca = '''" + ca + "'''\n", // no port
		"endpoint = \"otel:0\"\nca = '''" + ca + "'''\n",
		"endpoint = \":4317\"\nca = '''" + ca + "'''\n",
		"endpoint = \"otel:4317\"\n",                     // not pinned
		"endpoint = \"otel:4317\"\nca = \"not a PEM\"\n", // not pinned
		good + "ship = [\"profiles\"]\n",                 // unknown signal
		good + "buffer_mib = 1024\n",                     // too large
		good + "buffer_mib = -1\n",
		good + "metrics_interval = \"1ms\"\n",
		good + "metrics_interval = \"soon\"\n",
		good + "insecure = true\n", // unknown key
		good + strings.Repeat("#", maxConfig),
	} {
		if _, err := ParseConfig(bad); !errors.Is(err, ErrBadConfig) {
			t.Errorf("%.60q: %v, want ErrBadConfig", bad, err)
		}
	}
}

func TestFromInitdata(t *testing.T) {
	doc := "version = \"0.1.0\"\nalgorithm = \"sha384\"\n[data]\n\"telemetry.toml\" = '''\nendpoint = \"otel:4317\"\nca = \"\"\"" + testCA(t) + "\"\"\"\n'''\n"
	c, ok, err := FromInitdata([]byte(doc))
	if err != nil || !ok || c.Endpoint != "otel:4317" {
		t.Fatalf("%v %v %v", c, ok, err)
	}
	if _, ok, err := FromInitdata([]byte("version = \"0.1.0\"\nalgorithm = \"sha384\"\n[data]\n")); ok || err != nil {
		t.Fatalf("no telemetry.toml: %v %v", ok, err)
	}
}

func FuzzParseConfig(f *testing.F) {
	f.Add("endpoint = \"otel.example.org:4317\"\nca = '''" + testCA(f) + "'''\nship = [\"logs\"]\nbuffer_mib = 4\nmetrics_interval = \"5s\"\n")
	f.Add("endpoint = \"otel:4317\"\nca = \"x\"\n")
	f.Fuzz(func(t *testing.T, text string) {
		c, err := ParseConfig(text)
		if err != nil {
			if !errors.Is(err, ErrBadConfig) {
				t.Fatalf("untyped error %v", err)
			}
			return
		}
		if c.Roots() == nil || c.ServerName == "" || c.BufferBytes() <= 0 || c.MetricsInterval < minMetricsInterval {
			t.Fatalf("accepted an unusable config: %+v", c)
		}
	})
}
