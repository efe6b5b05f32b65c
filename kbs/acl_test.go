package kbs

import (
	"bufio"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cocoon-cc/cocoon/protocol"
)

// lockedBuffer collects log lines written by the server's goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	sb strings.Builder
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.sb.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.sb.String()
}

// tenantKBS has roles whose ACLs the issue 14 attacks bypassed: one for
// public resources, one tenant's with an unanchored regex, a reader of
// reference values, and a GET-only role.
func tenantKBS(t *testing.T) (*testKBS, ed25519.PrivateKey, *lockedBuffer) {
	t.Helper()
	k, priv := edAdminKBS(t, t.TempDir(), `
[[admin.authorization.regex_acl.acls]]
role = "public-writer"
allowed_endpoints = "^/kbs/v0/resource/.*/public$"

[[admin.authorization.regex_acl.acls]]
role = "tenant-b"
allowed_endpoints = "/kbs/v0/resource/tenantB/"

[[admin.authorization.regex_acl.acls]]
role = "rv-reader"
allowed_endpoints = "^/kbs/v0/reference-value/"

[[admin.authorization.regex_acl.acls]]
role = "rv-get"
allowed_endpoints = "^/kbs/v0/reference-value"
allowed_methods = ["get"]
`)
	logs := &lockedBuffer{}
	k.srv.log = slog.New(slog.NewTextHandler(logs, nil))
	return k, priv, logs
}

// TestAdminACLCanonicalPath replays the ACL bypasses of issue 14: text in
// the query or a trailing slash made a role's regex match a path it does
// not allow. Each is refused and changes nothing.
func TestAdminACLCanonicalPath(t *testing.T) {
	k, key, logs := tenantKBS(t)
	k.srv.resources.store.Put(bg, ResourceNamespace, "default/key/secret", []byte("secret"))
	k.srv.resources.store.Put(bg, ResourceNamespace, "tenantA/key/x", []byte("a"))
	k.registerSampleRVs(t)
	tok := func(role string) map[string]string { return bearerHdr(mustAdminToken(t, key, role, time.Minute)) }
	pub, tenB, rvReader, rvGet := tok("public-writer"), tok("tenant-b"), tok("rv-reader"), tok("rv-get")
	denyAll := []byte(base64.RawURLEncoding.EncodeToString([]byte("package policy\ndefault allow := false\n")))
	polBody, _ := json.Marshal(map[string]string{"policy": string(denyAll)})
	rvMsg := []byte(`{"version":"0.1.0","type":"sample","payload":"` + base64.StdEncoding.EncodeToString([]byte(`{"svn":["9"]}`)) + `"}`)
	inv, auth := protocol.KindInvalidPath, protocol.KindAdminAuth
	k.expectRefused(t, []badCase{
		{"query suffix overwrites a secret", "POST", "/kbs/v0/resource/default/key/secret?/public", []byte("evil"), pub, 404, inv},
		{"query deletes another tenant's resource", "DELETE", "/kbs/v0/resource/tenantA/key/x?x=/public", nil, pub, 404, inv},
		{"empty query", "POST", "/kbs/v0/resource/default/key/public?", []byte("x"), pub, 404, inv},
		{"query replaces the resource policy", "POST", "/kbs/v0/resource-policy?/kbs/v0/resource/tenantB/", polBody, tenB, 404, inv},
		{"query replaces the attestation policy", "POST", "/kbs/v0/attestation-policy?/kbs/v0/resource/tenantB/", polBody, tenB, 404, inv},
		{"query registers reference values", "POST", "/kbs/v0/reference-value?/kbs/v0/resource/tenantB/", rvMsg, tenB, 404, inv},
		{"unanchored regex elsewhere in the path", "POST", "/kbs/v0/resource/tenantA/key/x", []byte("evil"), tenB, 401, auth},
		{"trailing slash makes a reader a writer", "POST", "/kbs/v0/reference-value/", rvMsg, rvReader, 404, inv},
		{"GET-only role registers", "POST", "/kbs/v0/reference-value", rvMsg, rvGet, 401, auth},
		{"GET-only role sets a resource", "POST", "/kbs/v0/reference-value/../resource/default/key/x", []byte("x"), rvGet, 404, inv},
		{"double slash", "POST", "/kbs/v0/resource/tenantB//key/x", []byte("x"), tenB, 404, inv},
		{"leading double slash", "POST", "//kbs/v0/resource/tenantB/key/x", []byte("x"), tenB, 404, inv},
		{"dot segment before the prefix", "POST", "/x/../kbs/v0/resource/tenantB/key/x", []byte("x"), tenB, 404, inv},
		{"dot segment", "POST", "/kbs/v0/resource/tenantB/./key/x", []byte("x"), tenB, 404, inv},
		{"encoded dot segment", "POST", "/kbs/v0/resource/default/key/secret/%2e%2e/public", []byte("x"), pub, 404, inv},
		{"encoded slash", "POST", "/kbs/v0/resource/default/key%2Fpublic/x", []byte("x"), pub, 404, inv},
		{"trailing slash on a resource", "POST", "/kbs/v0/resource/tenantB/key/x/", []byte("x"), tenB, 404, inv},
		// Not a resource path Trustee's resource plugin reads.
		{"fragment text", "POST", "/kbs/v0/resource/default/key/secret#/public", []byte("x"), pub, 401, protocol.KindPluginInternal},
	})
	// What the roles are allowed still works, on the canonical path.
	for _, c := range []struct {
		method, path string
		body         []byte
		hdr          map[string]string
	}{
		{"POST", "/kbs/v0/resource/default/key/public", []byte("p"), pub},
		{"DELETE", "/kbs/v0/resource/default/key/public", nil, pub},
		{"POST", "/kbs/v0/resource/tenantB/key/x", []byte("b"), tenB},
		{"GET", "/kbs/v0/reference-value/svn", nil, rvReader},
		{"GET", "/kbs/v0/reference-value/svn", nil, rvGet},
	} {
		if r := k.raw(t, c.method, c.path, c.hdr, string(c.body)); r.status != 200 {
			t.Errorf("%s %s: %d %s", c.method, c.path, r.status, r.body)
		}
	}
	if v, _ := k.srv.resources.store.Get(bg, ResourceNamespace, "default/key/secret"); string(v) != "secret" {
		t.Errorf("secret overwritten: %q", v)
	}
	// Refusals are audited with the request target as sent, query included,
	// and successes with the canonical path and the method.
	out := logs.String()
	for _, want := range []string{
		`msg="audit: admin call refused" method=POST target=/kbs/v0/resource/default/key/secret?/public`,
		`msg="audit: admin call refused" method=DELETE target="/kbs/v0/resource/tenantA/key/x?x=/public"`,
		`msg="request refused" method=POST target=/kbs/v0/reference-value/ kind=InvalidRequestPath`,
		`action=set-resource role=tenant-b`,
		`method=POST path=/kbs/v0/resource/tenantB/key/x`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("audit log lacks %s:\n%s", want, out)
		}
	}
}

func TestCanonicalPath(t *testing.T) {
	for target, ok := range map[string]bool{
		"/kbs/v0/resource/a/b/c":    true,
		"/":                         true,
		"/kbs/v0/resource/a/b/c/":   false,
		"/kbs//v0":                  false,
		"/kbs/v0/./x":               false,
		"/kbs/v0/x/..":              false,
		"/kbs/v0/%2E%2e/x":          false,
		"/kbs/v0/a%2fb":             false,
		"/kbs/v0/a%252fb":           true, // decoded once: "%2f", routed as such
		"/kbs/v0/reference-value?x": true, // CanonicalPath is the path alone
	} {
		r := mustRequest(t, target)
		if _, err := CanonicalPath(r.URL); (err == nil) != ok {
			t.Errorf("%s: %v", target, err)
		}
	}
	if _, err := adminPath(mustRequest(t, "/kbs/v0/reference-value?x").URL); err == nil {
		t.Error("admin path with a query accepted")
	}
}

// mustRequest parses a request target as the HTTP server does.
func mustRequest(t *testing.T, target string) *http.Request {
	t.Helper()
	r, err := http.ReadRequest(bufio.NewReader(strings.NewReader("GET " + target + " HTTP/1.1\r\nHost: kbs\r\n\r\n")))
	if err != nil {
		t.Fatal(err)
	}
	return r
}
