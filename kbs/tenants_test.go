package kbs

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cocoon-cc/cocoon/guest/attester/sample"
	"github.com/cocoon-cc/cocoon/kbs/client"
	"github.com/cocoon-cc/cocoon/kbs/respolicy"
	"github.com/cocoon-cc/cocoon/protocol"
)

// logLines are the lines of logs holding every one of substr.
func logLines(logs *lockedBuffer, substr ...string) []string {
	var out []string
	for _, l := range strings.Split(logs.String(), "\n") {
		all := true
		for _, s := range substr {
			all = all && strings.Contains(l, s)
		}
		if all {
			out = append(out, l)
		}
	}
	return out
}

// logTo makes the servers log to one buffer.
func logTo(ks ...*testKBS) *lockedBuffer {
	logs := &lockedBuffer{}
	log := slog.New(slog.NewTextHandler(logs, nil))
	for _, k := range ks {
		k.srv.log = log
	}
	return logs
}

// tenantACLs gives each of two tenants a role of its own repository, and
// the operator a role over everything.
func tenantACLs(t testing.TB) (string, ed25519.PrivateKey) {
	dir := t.TempDir()
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	der, _ := x509.MarshalPKIXPublicKey(pub)
	writePEM(t, filepath.Join(dir, "ops.pub"), "PUBLIC KEY", der)
	return fmt.Sprintf(`
[admin]
authorization_mode = "AuthenticatedAuthorization"

[[admin.authentication.bearer_jwt.identity_providers]]
public_key_uri = "file://%s/ops.pub"

[[admin.authorization.regex_acl.acls]]
role = "team-a"
allowed_endpoints = "^/kbs/v0/.+$"
repositories = ["a"]

[[admin.authorization.regex_acl.acls]]
role = "team-b"
allowed_endpoints = "^/kbs/v0/.+$"
repositories = ["b"]

[[admin.authorization.regex_acl.acls]]
role = "operator"
allowed_endpoints = "^/kbs/v0/.+$"
`, dir), priv
}

// testTenants: two tenants, on replicas ra and rb (which may be one
// server), can neither read, write nor see each other's resources and
// resource policies, nor anything that is no repository's; each
// repository's policy decides for its resources only; audit lines name
// the tenant.
func testTenants(t *testing.T, ra, rb *testKBS, key ed25519.PrivateKey, logs *lockedBuffer) {
	ctx := bg
	tok := func(role string) map[string]string { return bearerHdr(mustAdminToken(t, key, role, time.Minute)) }
	a, b, op := tok("team-a"), tok("team-b"), tok("operator")
	policy := func(text string) []byte {
		body, _ := json.Marshal(map[string]string{"policy": base64.RawURLEncoding.EncodeToString([]byte(text))})
		return body
	}
	ra.registerSampleRVs(t)
	// The operator's policy lets every repository's own policy decide.
	for _, step := range []struct {
		k      *testKBS
		hdr    map[string]string
		method string
		path   string
		body   []byte
		want   protocol.Kind // "": 200
	}{
		{ra, op, "POST", "/kbs/v0/resource-policy", policy(respolicy.AllowAll), ""},
		{ra, a, "POST", "/kbs/v0/resource/a/key/s", []byte("secret-a"), ""},
		{rb, b, "POST", "/kbs/v0/resource/b/key/s", []byte("secret-b"), ""},
		{rb, b, "POST", "/kbs/v0/resource-policy/b", policy(respolicy.Affirming), ""},
		{rb, a, "GET", "/kbs/v0/resource-policy/a", nil, protocol.KindPolicyEngine}, // a's own: none yet
		{rb, b, "GET", "/kbs/v0/resource-policy/b", nil, ""},
		// Neither tenant reaches the other's repository, on either replica.
		{rb, a, "POST", "/kbs/v0/resource/b/key/s", []byte("overwritten"), protocol.KindAdminAuth},
		{ra, a, "DELETE", "/kbs/v0/resource/b/key/s", nil, protocol.KindAdminAuth},
		{rb, a, "POST", "/kbs/v0/resource/b/key/new", []byte("x"), protocol.KindAdminAuth},
		{ra, a, "GET", "/kbs/v0/resource-policy/b", nil, protocol.KindAdminAuth},
		{rb, a, "POST", "/kbs/v0/resource-policy/b", policy(respolicy.AllowAll), protocol.KindAdminAuth},
		{ra, b, "GET", "/kbs/v0/resource-policy/a", nil, protocol.KindAdminAuth},
		{ra, b, "DELETE", "/kbs/v0/resource/a/key/s", nil, protocol.KindAdminAuth},
		// Nor anything that is no repository's.
		{ra, a, "POST", "/kbs/v0/resource-policy", policy(respolicy.AllowAll), protocol.KindAdminAuth},
		{ra, a, "GET", "/kbs/v0/resource-policy", nil, protocol.KindAdminAuth},
		{rb, b, "POST", "/kbs/v0/attestation-policy", []byte(`{}`), protocol.KindAdminAuth},
		{rb, b, "POST", "/kbs/v0/reference-value", []byte(`{}`), protocol.KindAdminAuth},
		{rb, b, "GET", "/kbs/v0/reference-value/svn", nil, protocol.KindAdminAuth},
		// A repository without a policy of its own: PolicyEngineError (401,
		// as Trustee's policy engine refuses an unknown policy), not someone else's.
		{ra, op, "GET", "/kbs/v0/resource-policy/c", nil, protocol.KindPolicyEngine},
	} {
		r := step.k.do(t, step.method, step.path, step.body, step.hdr)
		if (step.want == "") != (r.status == 200) || r.kind() != step.want {
			t.Fatalf("%s %s as %s: %d %s, want %q", step.method, step.path, step.hdr["Authorization"][:20], r.status, r.body, step.want)
		}
	}
	teamA := client.NewAdminSigning(ra.ts.URL, ra.ts.Client(), key, client.TokenClaims{Role: "team-a"})
	if err := teamA.SetRepositoryPolicy(ctx, "a", respolicy.DenyAll); err != nil {
		t.Fatal(err)
	}
	if err := teamA.SetRepositoryPolicy(ctx, "../b", respolicy.AllowAll); err == nil {
		t.Fatal("the client sent a repository that is no path segment")
	}
	// a's policy denies a's resources only; b's are b's policy's.
	guest, _ := client.New(rb.ts.URL, sample.Attester{}, client.Options{})
	var perr *protocol.Error
	if _, err := guest.GetResource(ctx, "a/key/s"); !errors.As(err, &perr) || perr.Kind != protocol.KindPolicyDeny {
		t.Fatalf("a's resource under a's deny-all policy: %v", err)
	}
	if v, err := guest.GetResource(ctx, "b/key/s"); err != nil || string(v) != "secret-b" {
		t.Fatalf("b's resource = %q, %v (refused writes must change nothing)", v, err)
	}
	if got := logLines(logs, "action=set-resource ", "tenant=a", "role=team-a"); len(got) != 1 {
		t.Fatalf("audit lines of a's write: %q", got)
	}
	if got := logLines(logs, "action=release-resource", "tenant=b", "resource=b/key/s"); len(got) != 1 {
		t.Fatalf("audit lines of b's release: %q", got)
	}
	if got := logLines(logs, "audit: admin call refused", "method=POST", "target=/kbs/v0/resource/b/key/s", "tenant=b", "team-a"); len(got) != 1 {
		t.Fatalf("refusal of a's write to b: %q", got)
	}
}

func TestTenants(t *testing.T) {
	acls, key := tenantACLs(t)
	k := newKBS(t, baseConfig("@DATA@", "")+acls)
	testTenants(t, k, k, key, logTo(k))
}

func TestTenantConfig(t *testing.T) {
	acls, _ := tenantACLs(t)
	bad := strings.Replace(acls, `repositories = ["a"]`, `repositories = ["../a"]`, 1)
	cfg, err := ParseConfig([]byte(baseConfig(t.TempDir(), "")+bad), quietLog())
	if err != nil {
		t.Fatal(err)
	}
	if srv, err := New(bg, cfg, sampleRegistry(), quietLog()); err == nil || !strings.Contains(err.Error(), "repositories") {
		if srv != nil {
			srv.Close()
		}
		t.Fatalf("a repository that is no path segment: %v", err)
	}
}
