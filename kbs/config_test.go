package kbs

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	gojose "github.com/go-jose/go-jose/v4"

	"github.com/cocoon-cc/cocoon/attestation/ear"
	"github.com/cocoon-cc/cocoon/kbs/respolicy"
	"github.com/cocoon-cc/cocoon/protocol"
)

// trusteeConfig is Trustee's kbs/config/kbs-config.toml, verbatim.
const trusteeConfig = `[http_server]
insecure_http = true

[attestation_token]
insecure_header_jwk = true

[attestation_service]
type = "coco_as_builtin"

[attestation_service.attestation_token_broker]
duration_min = 5

[attestation_service.rvps_config]
type = "BuiltIn"

[admin]
authorization_mode = "InsecureAllowAll"

# Unified storage backend configuration
[storage_backend]
storage_type = "LocalFs"

[storage_backend.backends.local_fs]
dir_path = "/opt/confidential-containers/storage"

# Optional session storage type override.
# If omitted, KBS falls back to [storage_backend].storage_type.
# Backend-specific config is always reused from [storage_backend.backends].
# Session state is stored under namespace: "kbs_protocol_session".
#
# session_storage_type = "Memory"

[[plugins]]
name = "resource"
storage_backend_type = "kvstorage"

# Example configuration for HashiCorp Vault KV v1 backend
# Supports both read and write operations with HTTPS support
# [[plugins]]
# name = "resource"
# storage_backend_type = "Vault"
# vault_url = "http://vault.example.com:8200"
# token = "hvs.your-vault-token-here"
# mount_path = "secret"  # Optional, defaults to "secret"
# verify_ssl = false      # Optional, defaults to false
# ca_certs = ["/path/to/ca-bundle.pem"]  # Optional, custom CA certificates
`

func TestTrusteeConfig(t *testing.T) {
	var logged bytes.Buffer
	cfg, err := ParseConfig([]byte(trusteeConfig), slog.New(slog.NewTextHandler(&logged, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if !cfg.HTTPServer.InsecureHTTP || !cfg.AttestationToken.InsecureHeaderJWK {
		t.Errorf("http_server/attestation_token: %+v %+v", cfg.HTTPServer, cfg.AttestationToken)
	}
	if cfg.AttestationService.Type != ASBuiltin || cfg.AttestationService.TokenBroker.DurationMin != 5 ||
		cfg.AttestationService.RVPS.Type != "BuiltIn" {
		t.Errorf("attestation_service %+v", cfg.AttestationService)
	}
	if cfg.Admin.AuthorizationMode != ModeInsecureAllowAll {
		t.Errorf("admin mode %q", cfg.Admin.AuthorizationMode)
	}
	// LocalFs becomes the embedded store in the same directory.
	const dir = "/opt/confidential-containers/storage"
	if cfg.StorageBackend.StorageType != "Embedded" || cfg.StorageBackend.Backends.Embedded.Path != dir || cfg.DataDir != dir {
		t.Errorf("storage %+v, data_dir %q", cfg.StorageBackend, cfg.DataDir)
	}
	if len(cfg.Plugins) != 1 || cfg.Plugins[0].Name != "resource" {
		t.Errorf("plugins %+v", cfg.Plugins)
	}
	if len(cfg.HTTPServer.Sockets) != 1 || cfg.HTTPServer.Sockets[0] != DefaultSocket ||
		cfg.HTTPServer.PayloadRequestSize != DefaultPayloadMiB || cfg.AttestationService.Timeout != DefaultSessionMinutes {
		t.Errorf("defaults %+v / %d", cfg.HTTPServer, cfg.AttestationService.Timeout)
	}
	// The keys Cocoon ignores are logged, not fatal.
	if !strings.Contains(logged.String(), "plugins.storage_backend_type") {
		t.Errorf("unused key not logged:\n%s", logged.String())
	}

	// It runs, in a temporary directory instead of /opt.
	k := newKBS(t, strings.ReplaceAll(trusteeConfig, dir, "@DATA@"))
	if k.srv.cfg.StorageBackend.StorageType != "Embedded" {
		t.Fatal("not the embedded store")
	}
	if _, err := os.Stat(filepath.Join(k.dataDir, "sealing.key")); err != nil {
		t.Errorf("no sealing key: %v", err)
	}
	if r := k.do(t, "POST", "/kbs/v0/resource/default/key/x", []byte("x"), nil); r.status != 200 {
		t.Errorf("InsecureAllowAll admin: %d %s", r.status, r.body)
	}
	// insecure_header_jwk: a token signed by any key is believed, as in
	// Trustee; this is what that option means.
	k.srv.resources.policy.Set(bg, ResourcePolicyID, respolicy.AllowAll)
	c := k.newClient(t)
	tok, err := c.Attest(bg)
	if err != nil {
		t.Fatal(err)
	}
	claims, _, _ := k.srv.tokens.Verify(tok)
	fk, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	fs, _ := ear.NewSigner(fk, nil)
	forged, _ := fs.Sign(claims)
	if r := k.do(t, "GET", "/kbs/v0/resource/default/key/x", nil, bearerHdr(forged)); r.status != 200 {
		t.Errorf("insecure_header_jwk: %d %s", r.status, r.body)
	}
}

func TestTLSRequired(t *testing.T) {
	for name, text := range map[string]string{
		"no http_server":  "",
		"key only":        "[http_server]\nprivate_key = \"/k.pem\"\n",
		"cert only":       "[http_server]\ncertificate = \"/c.pem\"\n",
		"insecure false":  "[http_server]\ninsecure_http = false\n",
		"trustee sockets": "[http_server]\nsockets = [\"0.0.0.0:8080\"]\n",
	} {
		if _, err := ParseConfig([]byte(text), quietLog()); err == nil {
			t.Errorf("%s: plain HTTP accepted without insecure_http", name)
		}
	}
	cfg, err := ParseConfig([]byte("[http_server]\nprivate_key = \"/k.pem\"\ncertificate = \"/c.pem\"\nsockets = [\"0.0.0.0:8443\"]\npayload_request_size = 7\n"), quietLog())
	if err != nil {
		t.Fatal(err)
	}
	sc := cfg.HTTPServer.ServeConfig()
	if sc.Insecure || sc.CertFile != "/c.pem" || sc.KeyFile != "/k.pem" || sc.Sockets[0] != "0.0.0.0:8443" || cfg.HTTPServer.PayloadRequestSize != 7 {
		t.Errorf("TLS config %+v", sc)
	}
	if cfg.DataDir != DefaultDataDir || cfg.StorageBackend.Backends.Embedded.Path != DefaultDataDir {
		t.Errorf("data dir %q / %q", cfg.DataDir, cfg.StorageBackend.Backends.Embedded.Path)
	}
}

func TestConfigRefusals(t *testing.T) {
	for name, text := range map[string]string{
		"not TOML":         "[http_server",
		"wrong type":       "[http_server]\ninsecure_http = \"yes\"\n",
		"AS type":          "[http_server]\ninsecure_http = true\n[attestation_service]\ntype = \"coco_as_grpc\"\n",
		"restful no addr":  "[http_server]\ninsecure_http = true\n[attestation_service]\ntype = \"coco_as_restful\"\n",
		"storage Postgres": "[http_server]\ninsecure_http = true\n[storage_backend]\nstorage_type = \"Postgres\"\n",
		"storage Redis":    "[http_server]\ninsecure_http = true\n[storage_backend]\nstorage_type = \"Redis\"\n",
		"sockets a string": "[http_server]\ninsecure_http = true\nsockets = \"0.0.0.0:8080\"\n",
		"negative limit":   "[http_server]\ninsecure_http = true\n[limits]\nrcar_rate = -1\n",
	} {
		if cfg, err := ParseConfig([]byte(text), quietLog()); err == nil {
			t.Errorf("%s: accepted %+v", name, cfg)
		}
	}
	// Unknown plugins are refused when the server is built.
	cfg, err := ParseConfig([]byte(baseConfig(t.TempDir(), "")+"\n[[plugins]]\nname = \"nebula-ca\"\n"), quietLog())
	if err != nil {
		t.Fatal(err)
	}
	if srv, err := New(bg, cfg, sampleRegistry(), quietLog()); err == nil {
		srv.Close()
		t.Error("unknown plugin accepted")
	}
	// Trustee's spelling of the built-in AS type.
	cfg, err = ParseConfig([]byte("[http_server]\ninsecure_http = true\n[attestation_service]\ntype = \"CoCoASBuiltIn\"\n"), quietLog())
	if err != nil || cfg.AttestationService.Type != ASBuiltin {
		t.Errorf("CoCoASBuiltIn: %v %+v", err, cfg)
	}
}

func TestEmbeddedRestart(t *testing.T) {
	dir := t.TempDir()
	text := fmt.Sprintf(`session_storage_type = "Embedded"
[http_server]
insecure_http = true
[storage_backend]
storage_type = "Embedded"
[storage_backend.backends.embedded]
path = %q
sealing_key_path = %q
`, filepath.Join(dir, "db"), filepath.Join(dir, "keys", "sealing.key"))
	os.MkdirAll(filepath.Join(dir, "keys"), 0o700)
	start := func() *testKBS { return startFromText(t, text) }
	k1 := start()
	provisionKept(t, k1)
	sess, _ := k1.srv.sessions.create(protocol.TeeSample)
	tok := mustAttestDirect(t, k1)
	jwks1, _ := json.Marshal(k1.srv.jwks)
	k1.srv.Close()
	if _, err := os.Stat(filepath.Join(dir, "keys", "sealing.key")); err != nil {
		t.Fatalf("sealing key not at sealing_key_path: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "db", "sealing.key")); err == nil {
		t.Error("sealing key also written beside the database")
	}

	k2 := start()
	defer k2.srv.Close()
	// The token signing key survived: old tokens verify, JWKS unchanged.
	if _, _, err := k2.srv.tokens.Verify(tok); err != nil {
		t.Errorf("token after restart: %v", err)
	}
	if jwks2, _ := json.Marshal(k2.srv.jwks); !bytes.Equal(jwks1, jwks2) {
		t.Error("token key changed across a restart")
	}
	if v, err := k2.srv.store.Get(bg, ResourceNamespace, "default/key/x"); err != nil || string(v) != "kept" {
		t.Errorf("resource after restart: %q %v", v, err)
	}
	// The attested session is counted against max_sessions again.
	if n := k2.srv.sessions.live.Load(); n != 1 {
		t.Errorf("live sessions after restart: %d, want 1", n)
	}
	// A challenge issued before the restart can still be answered.
	if c, err := issued(k2.srv.sessions, sess.ID); err != nil || c.Nonce != sess.Nonce {
		t.Errorf("session after restart: %v", err)
	}
	if v, _ := k2.srv.rvps.Query(bg, "svn"); string(v) != `["1"]` {
		t.Errorf("reference value after restart: %s", v)
	}
	if text, _ := k2.srv.resources.policy.Get(bg, ResourcePolicyID); text != respolicy.Affirming {
		t.Error("resource policy reset by the restart")
	}
	// Values are sealed on disk: no plaintext resource in the database file.
	db, _ := os.ReadDir(filepath.Join(dir, "db"))
	for _, e := range db {
		b, _ := os.ReadFile(filepath.Join(dir, "db", e.Name()))
		if bytes.Contains(b, []byte("kept")) {
			t.Errorf("%s holds the resource in plaintext", e.Name())
		}
	}
}

// mustAttestDirect runs the handshake through the handler, without a
// listening server.
func mustAttestDirect(t testing.TB, k *testKBS) string {
	t.Helper()
	token, _ := attestDirect(t, k)
	return token
}

// attestDirect attests a new session with the test TEE key and returns
// the token and the session cookie the answer set.
func attestDirect(t testing.TB, k *testKBS) (token, cookie string) {
	t.Helper()
	sess, err := k.srv.sessions.create(protocol.TeeSample)
	if err != nil {
		t.Fatal(err)
	}
	key := testTEEKey(t)
	rec := serve(k.srv, "POST", "/kbs/v0/attest", attestationBody(t, sess.Nonce, sess.Nonce, key), sess.ID)
	if rec.Code != 200 {
		t.Fatalf("attest: %d %s", rec.Code, rec.Body)
	}
	var at protocol.AttestationToken
	json.Unmarshal(rec.Body.Bytes(), &at)
	return at.Token, response{header: rec.Header()}.setCookie()
}

// startFromText starts a KBS from TOML text without a test server, for
// tests that restart it on the same data.
func startFromText(t *testing.T, text string) *testKBS {
	t.Helper()
	cfg, err := ParseConfig([]byte(text), quietLog())
	if err != nil {
		t.Fatal(err)
	}
	srv, err := New(bg, cfg, sampleRegistry(), quietLog())
	if err != nil {
		t.Fatal(err)
	}
	return &testKBS{srv: srv, dataDir: cfg.DataDir}
}

// provisionKept lets the sample TEE attest and be released
// default/key/x, which holds "kept".
func provisionKept(t *testing.T, k *testKBS) {
	k.registerSampleRVs(t)
	k.srv.resources.policy.Set(bg, ResourcePolicyID, respolicy.Affirming)
	k.srv.resources.store.Put(bg, ResourceNamespace, "default/key/x", []byte("kept"))
}

// TestHeldSessionRestart: a session its client holds outlives a restart
// of the KBS, which stored nothing for it (the token key is what it
// keeps).
func TestHeldSessionRestart(t *testing.T) {
	text := fmt.Sprintf("data_dir = %q\n[http_server]\ninsecure_http = true\n[storage_backend]\nstorage_type = \"Embedded\"\n", t.TempDir())
	start := func() *testKBS { return startFromText(t, text) }
	k1 := start()
	provisionKept(t, k1)
	_, cookie := attestDirect(t, k1)
	k1.srv.Close()
	if _, err := os.Stat(filepath.Join(k1.dataDir, "sessions")); err == nil {
		t.Error("a session log was opened for held sessions")
	}
	k2 := start()
	defer k2.srv.Close()
	rec := serve(k2.srv, "GET", "/kbs/v0/resource/default/key/x", nil, cookie)
	var resp protocol.Response
	json.Unmarshal(rec.Body.Bytes(), &resp)
	if pt, err := testTEEKey(t).Decrypt(&resp); rec.Code != 200 || err != nil || string(pt) != "kept" {
		t.Errorf("resource after restart: %d %s", rec.Code, rec.Body)
	}
}

func TestSignerFromFilesAndTrustedTokens(t *testing.T) {
	dir := t.TempDir()
	// A CA and a P-256 token key it certifies, for KBS A's attestation service.
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "token CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, _ := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	ca, _ := x509.ParseCertificate(caDER)
	tokKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leafDER, _ := x509.CreateCertificate(rand.Reader, &x509.Certificate{SerialNumber: big.NewInt(2),
		Subject: pkix.Name{CommonName: "AS"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature}, ca, &tokKey.PublicKey, caKey)
	sec1, _ := x509.MarshalECPrivateKey(tokKey)
	writePEM(t, filepath.Join(dir, "token.key"), "EC PRIVATE KEY", sec1)
	writePEM(t, filepath.Join(dir, "token.crt"), "CERTIFICATE", leafDER)
	writePEM(t, filepath.Join(dir, "ca.crt"), "CERTIFICATE", caDER)

	a := newKBS(t, baseConfig("@DATA@", "")+fmt.Sprintf(`
[attestation_service.attestation_token_broker]
issuer_name = "kbs-a"
duration_min = 10
[attestation_service.attestation_token_broker.signer]
key_path = %q
cert_path = %q
`, filepath.Join(dir, "token.key"), filepath.Join(dir, "token.crt")))
	a.registerSampleRVs(t)
	tok := mustAttestDirect(t, a)
	claims, _, err := a.srv.tokens.Verify(tok)
	if err != nil {
		t.Fatal(err)
	}
	if claims.Issuer != "kbs-a" || claims.Expiry-claims.IssuedAt != 600 {
		t.Errorf("issuer %q, lifetime %d", claims.Issuer, claims.Expiry-claims.IssuedAt)
	}
	if !a.srv.jwks[0].Key.(*ecdsa.PublicKey).Equal(&tokKey.PublicKey) || len(a.srv.jwks[0].Certificates) != 1 {
		t.Error("JWKS is not the configured key with its certificate")
	}

	// KBS B trusts A's tokens through the CA, through a JWK set, or not at all.
	set, _ := json.Marshal(gojose.JSONWebKeySet{Keys: []gojose.JSONWebKey{{Key: &tokKey.PublicKey}}})
	os.WriteFile(filepath.Join(dir, "a.jwks"), set, 0o600)
	for name, extra := range map[string]string{
		"trusted_certs_paths": fmt.Sprintf("[attestation_token]\ntrusted_certs_paths = [%q]\n", filepath.Join(dir, "ca.crt")),
		"trusted_jwk_sets":    fmt.Sprintf("[attestation_token]\ntrusted_jwk_sets = [%q]\n", filepath.Join(dir, "a.jwks")),
		"nothing":             "",
	} {
		b := newKBS(t, baseConfig("@DATA@", "")+extra)
		_, _, err := b.srv.tokens.Verify(tok)
		if name == "nothing" {
			if !errors.Is(err, ear.ErrUntrustedKey) {
				t.Errorf("untrusted A: %v", err)
			}
		} else if err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}

	// Bad signer and trust configurations stop the server from starting.
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	p384DER, _ := x509.MarshalPKCS8PrivateKey(p384)
	writePEM(t, filepath.Join(dir, "p384.key"), "PRIVATE KEY", p384DER)
	os.WriteFile(filepath.Join(dir, "empty.crt"), []byte("no certificates here"), 0o600)
	os.WriteFile(filepath.Join(dir, "bad.jwks"), []byte("{"), 0o600)
	for name, extra := range map[string]string{
		"P-384 key":     fmt.Sprintf("[attestation_service.attestation_token_broker.signer]\nkey_path = %q\n", filepath.Join(dir, "p384.key")),
		"missing key":   fmt.Sprintf("[attestation_service.attestation_token_broker.signer]\nkey_path = %q\n", filepath.Join(dir, "nope.key")),
		"not PEM":       fmt.Sprintf("[attestation_service.attestation_token_broker.signer]\nkey_path = %q\n", filepath.Join(dir, "a.jwks")),
		"empty chain":   fmt.Sprintf("[attestation_service.attestation_token_broker.signer]\nkey_path = %q\ncert_path = %q\n", filepath.Join(dir, "token.key"), filepath.Join(dir, "empty.crt")),
		"missing certs": fmt.Sprintf("[attestation_token]\ntrusted_certs_paths = [%q]\n", filepath.Join(dir, "nope.crt")),
		"bad jwk set":   fmt.Sprintf("[attestation_token]\ntrusted_jwk_sets = [%q]\n", filepath.Join(dir, "bad.jwks")),
	} {
		cfg, err := ParseConfig([]byte(baseConfig(t.TempDir(), "")+extra), quietLog())
		if err != nil {
			t.Errorf("%s: ParseConfig: %v", name, err)
			continue
		}
		if srv, err := New(bg, cfg, sampleRegistry(), quietLog()); err == nil {
			srv.Close()
			t.Errorf("%s: New succeeded", name)
		}
	}
}

func TestSessionStorageType(t *testing.T) {
	base := "[http_server]\ninsecure_http = true\n[storage_backend]\nstorage_type = \"Embedded\"\n[storage_backend.backends.embedded]\npath = \"/tmp/x\"\n"
	cfg, err := ParseConfig([]byte("session_storage_type = \"Memory\"\n"+base), quietLog())
	if err != nil || cfg.SessionStorageType != "Memory" {
		t.Fatalf("Memory sessions: %v %+v", err, cfg)
	}
	if cfg, err = ParseConfig([]byte(base), quietLog()); err != nil || cfg.SessionStorageType != SessionsInCookie {
		t.Fatalf("default session storage: %v %q", err, cfg.SessionStorageType)
	}
	if cfg, err = ParseConfig([]byte("session_storage_type = \"Embedded\"\n"+base), quietLog()); err != nil || cfg.SessionStorageType != "Embedded" {
		t.Fatalf("Embedded sessions: %v %q", err, cfg.SessionStorageType)
	}
	for _, bad := range []string{"Postgres", "Sqlite"} {
		if _, err := ParseConfig([]byte("session_storage_type = \""+bad+"\"\n"+base), quietLog()); err == nil {
			t.Fatalf("session storage %s beside Embedded storage was accepted", bad)
		}
	}
	t.Setenv(RedisURLEnv, "")
	if cfg, err = ParseConfig([]byte("session_storage_type = \"Redis\"\n"+base), quietLog()); err != nil ||
		cfg.StorageBackend.Backends.Redis.URL != DefaultRedisURL {
		t.Fatalf("Redis sessions: %v, url %q", err, cfg.StorageBackend.Backends.Redis.URL)
	}
	t.Setenv(RedisURLEnv, "redis://10.0.0.1:6379/2")
	if cfg, _ = ParseConfig([]byte("session_storage_type = \"Redis\"\n"+base+"[storage_backend.backends.redis]\nurl = \"redis://x\"\n"),
		quietLog()); cfg.StorageBackend.Backends.Redis.URL != "redis://10.0.0.1:6379/2" {
		t.Fatalf("REDIS_URL did not win: %q", cfg.StorageBackend.Backends.Redis.URL)
	}
}

func TestPostgresConfig(t *testing.T) {
	base := "[http_server]\ninsecure_http = true\n[storage_backend]\nstorage_type = \"Postgres\"\n[storage_backend.backends.postgres]\n"
	t.Setenv(PostgresURLEnv, "")
	if _, err := ParseConfig([]byte(base), quietLog()); err == nil || !strings.Contains(err.Error(), "sealing_key_path") {
		t.Fatalf("Postgres without sealing_key_path: %v", err)
	}
	cfg, err := ParseConfig([]byte(base+"sealing_key_path = \"/k\"\n"), quietLog())
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.StorageBackend.Backends.Postgres.URL(); got != "postgres://postgres@localhost:5432/postgres" {
		t.Fatalf("default URL %q", got)
	}
	if cfg.SessionStorageType != SessionsInCookie {
		t.Fatalf("sessions go to %q", cfg.SessionStorageType)
	}
	cfg, err = ParseConfig([]byte(base+"sealing_key_path = \"/k\"\nhost = \"db\"\nport = 6543\ndb = \"kbs\"\nusername = \"u\"\npassword = \"p@ss/w\"\n"), quietLog())
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.StorageBackend.Backends.Postgres.URL(); got != "postgres://u:p%40ss%2Fw@db:6543/kbs" {
		t.Fatalf("URL %q", got)
	}
	t.Setenv(PostgresURLEnv, "postgres://env@h/db")
	if got := cfg.StorageBackend.Backends.Postgres.URL(); got != "postgres://env@h/db" {
		t.Fatalf("POSTGRES_URL did not win: %q", got)
	}
	if _, err := ParseConfig([]byte(base+"sealing_key_path = \"/k\"\nport = 70000\n"), quietLog()); err == nil {
		t.Fatal("port 70000 accepted")
	}
	if _, err := ParseConfig([]byte("[http_server]\ninsecure_http = true\n[storage_backend]\nstorage_type = \"Redis\"\n"), quietLog()); err == nil {
		t.Fatal("storage_type Redis accepted")
	}
}
