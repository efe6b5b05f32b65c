package e2e

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// provisionSample registers the sample TEE's reference values and an
// "affirming" resource policy through kbs-client.
func provisionSample(t *testing.T, url, adminKey string) {
	t.Helper()
	provisionSampleWith(t, []string{"--url", url}, adminKey)
}

func provisionSampleWith(t *testing.T, global []string, adminKey string) {
	t.Helper()
	admin := append(append([]string{}, global...), "config", "--auth-private-key", adminKey)
	for _, rv := range [][]string{
		{"launch_digest", "abcde"},
		{"svn", "1"},
		{"major_version", "1", "--as-integer", "--as-single-value"},
		{"minimum_minor_version", "1", "--as-integer", "--as-single-value"},
	} {
		mustClient(t, append(append(admin, "set-sample-reference-value"), rv...)...)
	}
	mustClient(t, append(admin, "set-resource-policy", "--affirming")...)
}

func TestKBSClientEndToEnd(t *testing.T) {
	data := t.TempDir()
	cfg, url := kbsConfig(t, data, "http", "")
	k := startKBS(t, cfg, url, data, nil)
	admin := []string{"--url", url, "config", "--auth-private-key", k.adminKey()}
	setResource(t, []string{"--url", url}, k.adminKey(), "default/key/1", []byte("s3cr3t\n"))

	// Cocoon's default policy never releases to the sample TEE.
	if _, err := kbsClient(t, "--url", url, "get-resource", "--path", "default/key/1"); err == nil ||
		!strings.Contains(err.Error(), "PolicyDeny") {
		t.Fatalf("default policy released to the sample TEE: %v", err)
	}

	provisionSample(t, url, k.adminKey())
	if got := mustClient(t, append(admin, "get-reference-value", "--id", "svn")...); got != `["1"]` {
		t.Fatalf("get-reference-value svn = %s", got)
	}
	out := mustClient(t, "--url", url, "get-resource", "--path", "default/key/1")
	if b, _ := base64.StdEncoding.DecodeString(out); string(b) != "s3cr3t\n" {
		t.Fatalf("get-resource = %q", out)
	}

	// Deny-all takes effect at once; delete removes the resource.
	mustClient(t, append(admin, "set-resource-policy", "--deny-all")...)
	if _, err := kbsClient(t, "--url", url, "get-resource", "--path", "default/key/1"); err == nil ||
		!strings.Contains(err.Error(), "PolicyDeny") {
		t.Fatalf("deny-all released: %v", err)
	}
	mustClient(t, append(admin, "set-resource-policy", "--allow-all")...)
	mustClient(t, append(admin, "delete-resource", "--path", "default/key/1")...)
	if _, err := kbsClient(t, "--url", url, "get-resource", "--path", "default/key/1"); err == nil ||
		!strings.Contains(err.Error(), "PluginInternalError: resource default/key/1 not found") {
		t.Fatalf("deleted resource: %v", err)
	}

	// Admin calls without credentials, or with a stranger's key, are refused.
	if _, err := kbsClient(t, "--url", url, "config", "set-resource-policy", "--allow-all"); err == nil {
		t.Fatal("admin call without credentials succeeded")
	}
	stranger := writeEd25519Key(t)
	if _, err := kbsClient(t, "--url", url, "config", "--auth-private-key", stranger, "set-resource-policy", "--allow-all"); err == nil ||
		!strings.Contains(err.Error(), "AdminAuthAccess") {
		t.Fatalf("stranger's admin key: %v", err)
	}

	// The audit log names every admin change and the release.
	for _, want := range []string{"action=set-resource", "action=set-resource-policy", "action=release-resource", "action=delete-resource"} {
		if !strings.Contains(k.log.String(), want) {
			t.Errorf("audit log lacks %s", want)
		}
	}
	if strings.Contains(k.log.String(), "s3cr3t") {
		t.Error("the secret appears in the KBS log")
	}
}

func writeEd25519Key(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "key.pem")
	out, err := exec.Command("openssl", "genpkey", "-algorithm", "ed25519", "-out", path).CombinedOutput()
	if err != nil {
		t.Fatalf("openssl genpkey: %v %s", err, out)
	}
	return path
}

func TestKBSRestartKeepsResourcesAndTokens(t *testing.T) {
	data := t.TempDir()
	cfg, url := kbsConfig(t, data, "http", "")
	k := startKBS(t, cfg, url, data, nil)
	provisionSample(t, url, k.adminKey())
	setResource(t, []string{"--url", url}, k.adminKey(), "default/key/restart", []byte("survives"))

	ic := newIndependentClient(t, url, "P-256")
	token := ic.attest(t)
	k.stop()

	startKBS(t, cfg, url, data, nil)
	// A new client connection holding only the old token (as a bearer).
	ic2 := newIndependentClient(t, url, "P-256")
	ic2.key, ic2.jwk = ic.key, ic.jwk
	if got := ic2.getResourceBearer(t, token, "default/key/restart"); string(got) != "survives" {
		t.Fatalf("after restart got %q", got)
	}
	// The session cookie of before the restart still works too.
	if got := ic.getResource(t, "default/key/restart"); string(got) != "survives" {
		t.Fatalf("session after restart got %q", got)
	}
}

func TestKBSServesTLS(t *testing.T) {
	dir := t.TempDir()
	certPEM, keyPEM := selfSigned(t)
	cert, key := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	os.WriteFile(cert, certPEM, 0o600)
	os.WriteFile(key, keyPEM, 0o600)
	data := t.TempDir()
	cfg, url := kbsConfig(t, data, "https", "")
	// Add the key pair to [http_server].
	b, _ := os.ReadFile(cfg)
	b = []byte(strings.Replace(string(b), "insecure_http = false", "insecure_http = false\nprivate_key = \""+key+"\"\ncertificate = \""+cert+"\"", 1))
	os.WriteFile(cfg, b, 0o600)

	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(certPEM)
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	k := startKBS(t, cfg, url, data, hc)
	global := []string{"--url", url, "--cert-file", cert}
	provisionSampleWith(t, global, k.adminKey())
	setResource(t, global, k.adminKey(), "default/key/tls", []byte("over tls"))
	out := mustClient(t, append(global, "get-resource", "--path", "default/key/tls")...)
	if b, _ := base64.StdEncoding.DecodeString(out); string(b) != "over tls" {
		t.Fatalf("get-resource over TLS = %q", out)
	}
	// A client that does not trust the KBS's certificate gets nothing, and
	// kbs-client's errors say what to change.
	plain := "http://" + strings.TrimPrefix(url, "https://")
	adminPub := filepath.Join(filepath.Dir(k.adminKey()), "public.pub")
	otherPEM, _ := selfSigned(t)
	other := filepath.Join(dir, "other.pem")
	os.WriteFile(other, otherPEM, 0o600)
	for _, c := range []struct {
		args []string
		hint string
	}{
		{[]string{"--url", url, "get-resource", "--path", "default/key/tls"}, "pass --cert-file"},
		{[]string{"--url", url, "--cert-file", other, "attest"}, "not signed by --cert-file " + other},
		{[]string{"--url", plain, "--cert-file", cert, "attest"}, "the KBS speaks HTTPS: use --url " + url},
		{[]string{"--url", url, "--cert-file", cert, "config", "--auth-private-key", adminPub,
			"delete-resource", "--path", "default/key/tls"}, "--auth-private-key takes the private key"},
	} {
		if _, err := kbsClient(t, c.args...); err == nil || !strings.Contains(err.Error(), "\nhint: ") || !strings.Contains(err.Error(), c.hint) {
			t.Errorf("kbs-client %v: %v; want the hint %q", c.args, err, c.hint)
		}
	}
}

func TestKBSRefusesPlainHTTPByDefault(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kbs.toml")
	os.WriteFile(path, []byte("[http_server]\nsockets = [\"127.0.0.1:0\"]\n"), 0o600)
	out, err := exec.Command(bin(t, "kbs"), "--config", path).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "insecure_http") {
		t.Fatalf("kbs without TLS keys nor insecure_http: err=%v out=%s", err, out)
	}
}
func selfSigned(t *testing.T) (certPEM, keyPEM []byte) {
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalPKCS8PrivateKey(k)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})
}

// initdataWithPolicy is a pod's initdata as Kata's tools write it: an agent
// policy ending with genpolicy's policy_data, and a top-level key Cocoon
// does not know (upstream ignores those).
func initdataWithPolicy(args string) string {
	return `version = "0.1.0"
algorithm = "sha384"
generator = "genpolicy"

[data]
"aa.toml" = '''
[token_configs.kbs]
url = "http://127.0.0.1:8080"
'''
"policy.rego" = '''
package agent_policy

default ExecProcessRequest := false

policy_data := {
  "containers": [
    {"OCI": {"Process": {"Args": ["/pause"]}}},
    {"OCI": {"Annotations": {"io.kubernetes.cri.image-name": "registry.example/app:1"},
             "Process": {"Args": ` + args + `}}}
  ]
}
'''
`
}

// TestInitDataAgentPolicyClaims: as Trustee's, the KBS's token exposes the
// agent policy of the guest's initdata as init_data_claims'
// agent_policy_claims (its policy_data object), so a resource policy can
// release a secret only to pods whose agent policy runs the expected
// command.
func TestInitDataAgentPolicyClaims(t *testing.T) {
	data := t.TempDir()
	cfg, url := kbsConfig(t, data, "http", "")
	k := startKBS(t, cfg, url, data, nil)
	provisionSample(t, url, k.adminKey())
	setResource(t, []string{"--url", url}, k.adminKey(), "default/key/app", []byte("for /app only"))
	policy := filepath.Join(t.TempDir(), "p.rego")
	if err := os.WriteFile(policy, []byte(`package policy
import rego.v1
default allow := false
allow if {
	cpu := input.submods.cpu0
	cpu["ear.status"] == "affirming"
	some c in cpu["ear.veraison.annotated-evidence"].init_data_claims.agent_policy_claims.containers
	c.OCI.Process.Args[0] == "/app"
}
`), 0o600); err != nil {
		t.Fatal(err)
	}
	mustClient(t, "--url", url, "config", "--auth-private-key", k.adminKey(), "set-resource-policy", "--policy-file", policy)

	good := initdataWithPolicy(`["/app", "--serve"]`)
	token := mustClient(t, "--url", url, "attest", good)
	claims := jwtPayload(t, token)
	idc := claims["submods"].(map[string]any)["cpu0"].(map[string]any)["ear.veraison.annotated-evidence"].(map[string]any)["init_data_claims"].(map[string]any)
	if _, ok := idc["policy.rego"]; ok {
		t.Errorf("init_data_claims keeps policy.rego beside agent_policy_claims: %v", idc)
	}
	if aa, ok := idc["aa.toml"].(map[string]any); !ok || aa["token_configs"] == nil {
		t.Errorf("init_data_claims aa.toml = %v", idc["aa.toml"])
	}

	out := mustClient(t, "--url", url, "get-resource", "--path", "default/key/app", good)
	if b, _ := base64.StdEncoding.DecodeString(out); string(b) != "for /app only" {
		t.Fatalf("get-resource = %q", out)
	}
	if _, err := kbsClient(t, "--url", url, "get-resource", "--path", "default/key/app", initdataWithPolicy(`["/bin/sh"]`)); err == nil ||
		!strings.Contains(err.Error(), "PolicyDeny") {
		t.Fatalf("released to a pod whose agent policy runs another command: %v", err)
	}
}

// jwtPayload decodes a JWT's claims without verifying it.
func jwtPayload(t *testing.T, token string) map[string]any {
	t.Helper()
	parts := strings.Split(strings.TrimSpace(token), ".")
	if len(parts) != 3 {
		t.Fatalf("not a JWT: %q", token)
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	var claims map[string]any
	if err != nil || json.Unmarshal(b, &claims) != nil {
		t.Fatalf("JWT payload %q: %v", parts[1], err)
	}
	return claims
}

// readmeBlock returns the first fenced block of lang in README.md after
// the line that has marker.
func readmeBlock(t *testing.T, marker, lang string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, after, ok := strings.Cut(string(b), marker)
	if !ok {
		t.Fatalf("README.md has no %q", marker)
	}
	_, after, ok = strings.Cut(after, "```"+lang+"\n")
	block, _, ok2 := strings.Cut(after, "```")
	if !ok || !ok2 {
		t.Fatalf("README.md has no %s block after %q", lang, marker)
	}
	return block
}

// replaceAll replaces each old of pairs in s, failing when one is absent:
// the README changed and this test must follow.
func replaceAll(t *testing.T, s string, pairs ...string) string {
	t.Helper()
	for i := 0; i < len(pairs); i += 2 {
		if !strings.Contains(s, pairs[i]) {
			t.Fatalf("README text lacks %q", pairs[i])
		}
		s = strings.ReplaceAll(s, pairs[i], pairs[i+1])
	}
	return s
}

// TestREADMEMinimalConfig runs the KBS with README's minimal configuration
// and README's first-secret walkthrough as written, but for its paths and
// port: the openssl commands make the keys and the certificate, the KBS
// starts, and the kbs-client commands store, release and print the secret.
func TestREADMEMinimalConfig(t *testing.T) {
	dir, data := t.TempDir(), t.TempDir()
	port := freePort(t)
	cfg := replaceAll(t, readmeBlock(t, "## The KBS", "toml"),
		`["0.0.0.0:8080"]`, fmt.Sprintf(`["127.0.0.1:%d"]`, port),
		"/etc/kbs/", dir+"/", "/var/lib/cocoon/kbs", data)
	cfgPath := filepath.Join(dir, "kbs.toml")
	os.WriteFile(cfgPath, []byte(cfg), 0o600)
	// The commands run in a shell in a scratch directory, with Cocoon's
	// binaries first in PATH.
	sh := func(script string) string {
		t.Helper()
		cmd := exec.Command("sh", "-ec", script)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "PATH="+filepath.Dir(bin(t, "kbs-client"))+":"+os.Getenv("PATH"))
		out, err := cmd.Output()
		if err != nil {
			var stderr []byte
			if ee, ok := err.(*exec.ExitError); ok {
				stderr = ee.Stderr
			}
			t.Fatalf("%s: %v %s", script, err, stderr)
		}
		return string(out)
	}
	sh(replaceAll(t, readmeBlock(t, "### A first secret", "sh"), "/etc/kbs/", dir+"/"))
	certPEM, err := os.ReadFile(filepath.Join(dir, "tls.crt"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(certPEM)
	url := fmt.Sprintf("https://127.0.0.1:%d", port)
	startKBS(t, cfgPath, url, data, &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}})
	out := sh(replaceAll(t, readmeBlock(t, "Start the KBS (`kbs --config kbs.toml`)", "sh"),
		"/etc/kbs/", dir+"/", "localhost:8080", fmt.Sprintf("localhost:%d", port)))
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if b, _ := base64.StdEncoding.DecodeString(lines[len(lines)-1]); string(b) != "my first secret\n" {
		t.Fatalf("the walkthrough printed %q", out)
	}
	// major_version registered as a list, as it is without
	// --as-single-value: the appraisal is contraindicated, and the refusal
	// says which claim and what to do.
	global := []string{"--url", url, "--cert-file", filepath.Join(dir, "tls.crt")}
	mustClient(t, append(global, "config", "--auth-private-key", filepath.Join(dir, "admin.key"), "--issuer", "ops",
		"set-sample-reference-value", "major_version", "1", "--as-integer")...)
	if _, err := kbsClient(t, append(global, "get-resource", "--path", "default/key/1")...); err == nil ||
		!strings.Contains(err.Error(), "PolicyDeny") || !strings.Contains(err.Error(), "contraindicated: hardware 97") ||
		!strings.Contains(err.Error(), "hint: the attestation service did not affirm") {
		t.Errorf("major_version in a list: %v", err)
	}
	// The token must carry the issuer: without it the refusal says so.
	_, err = kbsClient(t, "--url", url, "--cert-file", filepath.Join(dir, "tls.crt"), "config",
		"--auth-private-key", filepath.Join(dir, "admin.key"), "delete-resource", "--path", "default/key/1")
	if err == nil || !strings.Contains(err.Error(), `expects issuer "ops"`) {
		t.Errorf("admin token without the issuer: %v", err)
	}
}
