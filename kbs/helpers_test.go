package kbs

import (
	"bufio"
	"context"
	"crypto"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cocoon-cc/cocoon/attestation/verifier"
	sampleverifier "github.com/cocoon-cc/cocoon/attestation/verifier/sample"
	"github.com/cocoon-cc/cocoon/guest/attester/sample"
	"github.com/cocoon-cc/cocoon/kbs/client"
	"github.com/cocoon-cc/cocoon/protocol"
	"github.com/cocoon-cc/cocoon/rvps"
	"github.com/cocoon-cc/cocoon/store"
)

var bg = context.Background()

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// testKBS is an in-process KBS behind an httptest server.
type testKBS struct {
	srv      *Server
	ts       *httptest.Server
	dataDir  string
	adminKey crypto.Signer // the generated admin key, when [admin] is absent
}

// baseConfig is a plain-HTTP, in-memory configuration; extra is appended.
func baseConfig(dataDir, extra string) string {
	return fmt.Sprintf(`data_dir = %q
%s
[http_server]
insecure_http = true

[storage_backend]
storage_type = "Memory"
`, dataDir, extra)
}

func sampleRegistry() verifier.Registry {
	return verifier.Registry{protocol.TeeSample: sampleverifier.Verifier{}}
}

// newKBS starts a KBS from TOML text (baseConfig's if empty).
func newKBS(t testing.TB, tomlText string) *testKBS {
	t.Helper()
	dir := t.TempDir()
	if tomlText == "" {
		tomlText = baseConfig(dir, "")
	}
	cfg, err := ParseConfig([]byte(strings.ReplaceAll(tomlText, "@DATA@", dir)), quietLog())
	if err != nil {
		t.Fatal(err)
	}
	srv, err := New(bg, cfg, sampleRegistry(), quietLog())
	if err != nil {
		t.Fatal(err)
	}
	k := &testKBS{srv: srv, ts: httptest.NewServer(srv.Handler()), dataDir: cfg.DataDir}
	t.Cleanup(func() {
		k.ts.Close()
		srv.Close()
	})
	if b, err := os.ReadFile(filepath.Join(cfg.DataDir, "admin", "private.key")); err == nil {
		block, _ := pem.Decode(b)
		priv, err := x509.ParsePKCS8PrivateKey(block.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		k.adminKey = priv.(crypto.Signer)
	}
	return k
}

// adminToken signs a token with the generated admin key.
func (k *testKBS) adminToken(t testing.TB, role string, ttl time.Duration) string {
	t.Helper()
	tok, err := client.SignAdminToken(k.adminKey, role, ttl)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func (k *testKBS) admin(t testing.TB) *client.Admin {
	t.Helper()
	return client.NewAdminWithKey(k.ts.URL, k.ts.Client(), k.adminKey)
}

var sampleRVs = map[string]any{
	"launch_digest":         []string{"abcde"},
	"svn":                   []string{"1"},
	"major_version":         1,
	"minimum_minor_version": 0,
}

// registerSampleRVs registers the reference values that make the sample
// TEE's appraisal affirming.
func (k *testKBS) registerSampleRVs(t testing.TB) {
	t.Helper()
	payload, _ := json.Marshal(sampleRVs)
	msg, _ := json.Marshal(rvps.Message{Version: "0.1.0", Type: "sample", Payload: base64.StdEncoding.EncodeToString(payload)})
	if _, err := k.srv.rvps.Register(bg, msg); err != nil {
		t.Fatal(err)
	}
}

// newClient is a KBS client with a cookie jar of its own.
func (k *testKBS) newClient(t testing.TB) *client.Client {
	t.Helper()
	jar, _ := cookiejar.New(nil)
	c, err := client.New(k.ts.URL, sample.Attester{}, client.Options{HTTP: &http.Client{Jar: jar, Timeout: 30 * time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// response is a parsed answer.
type response struct {
	status int
	header http.Header
	body   []byte
}

// kind is the error variant of an error body ("" if the body is not one).
func (r response) kind() protocol.Kind {
	var info protocol.ErrorInformation
	if json.Unmarshal(r.body, &info) != nil {
		return ""
	}
	e, ok := protocol.ParseErrorInformation(info)
	if !ok {
		return ""
	}
	return e.Kind
}

// do sends one request with the test server's plain client (no cookie jar).
func (k *testKBS) do(t testing.TB, method, path string, body []byte, hdr map[string]string) response {
	t.Helper()
	var rd io.Reader
	if body != nil {
		rd = strings.NewReader(string(body))
	}
	req, err := http.NewRequest(method, k.ts.URL+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	for h, v := range hdr {
		req.Header.Set(h, v)
	}
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return response{status: resp.StatusCode, header: resp.Header, body: b}
}

// raw writes a request line and headers byte for byte, so that no client
// library cleans or re-escapes the path.
func (k *testKBS) raw(t testing.TB, method, target string, hdr map[string]string, body string) response {
	t.Helper()
	conn, err := net.Dial("tcp", k.ts.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var sb strings.Builder
	fmt.Fprintf(&sb, "%s %s HTTP/1.1\r\nHost: kbs\r\nConnection: close\r\nContent-Length: %d\r\n", method, target, len(body))
	for h, v := range hdr {
		fmt.Fprintf(&sb, "%s: %s\r\n", h, v)
	}
	sb.WriteString("\r\n")
	sb.WriteString(body)
	// Write while reading: a server that refuses a request before reading
	// its body answers and closes, and the rest of the write then fails.
	go io.WriteString(conn, sb.String())
	conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return response{status: resp.StatusCode, header: resp.Header, body: b}
}

// namespaces the KBS keeps state in.
var namespaces = []string{SessionNamespace, ResourceNamespace, ResourcePolicyNamespace,
	"attestation-policies", rvps.Namespace, KeyNamespace}

// snapshot copies every namespace of the store.
func snapshot(t testing.TB, st store.Store) map[string]map[string]string {
	t.Helper()
	out := map[string]map[string]string{}
	for _, ns := range namespaces {
		keys, err := st.List(bg, ns)
		if err != nil {
			t.Fatal(err)
		}
		m := map[string]string{}
		for _, key := range keys {
			v, err := st.Get(bg, ns, key)
			if err != nil {
				t.Fatal(err)
			}
			m[key] = string(v)
		}
		out[ns] = m
	}
	return out
}

func sameState(a, b map[string]map[string]string) bool {
	for _, ns := range namespaces {
		if !maps.Equal(a[ns], b[ns]) {
			return false
		}
	}
	return true
}

// issued reads a session id with the nonce its challenge was issued with.
func issued(s *sessions, id string) (*challenge, error) {
	c, err := s.parse(id)
	if err == nil {
		s.withNonce(c)
	}
	return c, err
}
