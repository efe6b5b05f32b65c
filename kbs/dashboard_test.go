package kbs

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cocoon-cc/cocoon/internal/testutil"
	"github.com/cocoon-cc/cocoon/jose"
	"github.com/cocoon-cc/cocoon/kbs/client"
	"github.com/cocoon-cc/cocoon/kbs/respolicy"
	"github.com/cocoon-cc/cocoon/protocol"
	"github.com/cocoon-cc/cocoon/store/memory"
)

func TestActivity(t *testing.T) {
	a := newActivity()
	t0 := time.Date(2026, 1, 2, 10, 0, 30, 0, time.UTC)
	m0 := t0.Truncate(time.Minute).Unix()
	a.attestation(t0.Add(-4*time.Hour), "snp", "affirming") // before the window: counted in all only
	a.attestation(t0.Add(-3*time.Hour), "tdx", "warning")   // the ring slot of t0, taken over below
	a.attestation(t0, "sample", "affirming")
	a.attestation(t0.Add(20*time.Second), "sample", "affirming")
	a.attestation(t0.Add(2*time.Minute), "sample", outcomeFailure)
	a.attestation(t0.Add(-3*time.Hour), "tdx", "warning") // late for its slot, now t0's: dropped from the series
	a.request(t0, "default/key/a", outcomeReleased)
	a.request(t0.Add(time.Minute), "default/key/a", "PolicyDeny")
	a.request(t0.Add(time.Minute), "default/key/b", "PolicyDeny")
	a.request(t0.Add(2*time.Minute), "default/key/b", "TokenNotFound")

	got := a.snapshot(t0.Add(2 * time.Minute))
	want := ActivitySnapshot{
		Window: ActivityWindow{Start: m0 + 120 - 179*60, StepSeconds: 60, Buckets: 180},
		Attestations: []AttestationCount{
			{"sample", "affirming", 2}, {"sample", "failure", 1}, {"snp", "affirming", 1}, {"tdx", "warning", 2},
		},
		AttestationsPerMin: []AttestationSeries{
			{"sample", "affirming", []Point{{m0, 2}}},
			{"sample", "failure", []Point{{m0 + 120, 1}}},
		},
		Requests: []RequestCount{
			{"default/key/a", "PolicyDeny", 1}, {"default/key/a", "released", 1},
			{"default/key/b", "PolicyDeny", 1}, {"default/key/b", "TokenNotFound", 1},
		},
		RequestsPerMinute: []RequestSeries{
			{"PolicyDeny", []Point{{m0 + 60, 2}}},
			{"TokenNotFound", []Point{{m0 + 120, 1}}},
			{"released", []Point{{m0, 1}}},
		},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("snapshot:\n got %+v\nwant %+v", got, want)
	}

	// Three hours on, the minutes have left the window; the totals stay.
	later := a.snapshot(t0.Add(3*time.Hour + 3*time.Minute))
	if len(later.AttestationsPerMin) != 0 || len(later.RequestsPerMinute) != 0 {
		t.Errorf("series outside the window: %+v %+v", later.AttestationsPerMin, later.RequestsPerMinute)
	}
	if !reflect.DeepEqual(later.Attestations, want.Attestations) || !reflect.DeepEqual(later.Requests, want.Requests) {
		t.Errorf("totals changed: %+v %+v", later.Attestations, later.Requests)
	}
}

// TestActivityResourceBound: any client may name any resource, so past
// maxResources paths the rest are counted together.
func TestActivityResourceBound(t *testing.T) {
	a := newActivity()
	now := time.Now()
	for i := range maxResources + 10 {
		a.request(now, fmt.Sprintf("default/key/%d", i), "ResourceNotFound")
	}
	a.request(now, "default/key/0", outcomeReleased)
	snap := a.snapshot(now)
	if !snap.ResourcesOverflowed || len(snap.Requests) != maxResources+2 {
		t.Fatalf("overflowed %v, %d counts", snap.ResourcesOverflowed, len(snap.Requests))
	}
	counts := map[requestKey]uint64{}
	for _, r := range snap.Requests {
		counts[requestKey{r.Resource, r.Reason}] = r.Count
	}
	if counts[requestKey{otherResource, "ResourceNotFound"}] != 10 || counts[requestKey{"default/key/0", outcomeReleased}] != 1 {
		t.Errorf("counts: other %d, released %d", counts[requestKey{otherResource, "ResourceNotFound"}],
			counts[requestKey{"default/key/0", outcomeReleased}])
	}
}

func TestActivityConcurrent(t *testing.T) {
	a := newActivity()
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 200 {
				a.attestation(time.Now(), "sample", "affirming")
				a.request(time.Now(), fmt.Sprintf("r/k/%d", g), outcomeReleased)
				if i%50 == 0 {
					a.snapshot(time.Now())
				}
			}
		})
	}
	wg.Wait()
	snap := a.snapshot(time.Now())
	var perMin int64
	for _, p := range snap.AttestationsPerMin[0].Points {
		perMin += p[1]
	}
	if snap.Attestations[0].Count != 1600 || perMin != 1600 || len(snap.Requests) != 8 {
		t.Errorf("total %d, per minute %d, %d resources", snap.Attestations[0].Count, perMin, len(snap.Requests))
	}
}

// dashboardKBS trusts an admin key for four roles: admin (anything),
// viewer (GET on the dashboard only), rv-reader (reference values) and
// tenant-a (anything of repository a's).
func dashboardKBS(t *testing.T) (*testKBS, map[string]map[string]string) {
	t.Helper()
	k, key := edAdminKBS(t, t.TempDir(), `
[[admin.authorization.regex_acl.acls]]
role = "admin"
allowed_endpoints = "^/.+$"

[[admin.authorization.regex_acl.acls]]
role = "viewer"
allowed_endpoints = "^/dashboard(/.*)?$"
allowed_methods = ["GET"]

[[admin.authorization.regex_acl.acls]]
role = "rv-reader"
allowed_endpoints = "^/kbs/v0/reference-value/.+$"

[[admin.authorization.regex_acl.acls]]
role = "tenant-a"
allowed_endpoints = "^/.+$"
repositories = ["a"]
`)
	k.adminKey = key
	hdr := map[string]map[string]string{}
	for _, role := range []string{"admin", "viewer", "rv-reader", "tenant-a"} {
		hdr[role] = bearerHdr(mustAdminToken(t, key, role, time.Hour))
	}
	return k, hdr
}

// TestDashboardSummary drives real handshakes and resource requests and
// reads them back from the dashboard's API and /metrics.
func TestDashboardSummary(t *testing.T) {
	k, hdr := dashboardKBS(t)
	adm := client.NewAdminWithKey(k.ts.URL, k.ts.Client(), k.adminKey)
	const secret = "s3cr3t-dashboard-value"
	if err := adm.SetResource(bg, "default/key/one", []byte(secret)); err != nil {
		t.Fatal(err)
	}
	// No reference values: contraindicated; the default policy denies.
	if _, err := k.newClient(t).GetResource(bg, "default/key/one"); err == nil || !strings.Contains(err.Error(), "PolicyDeny") {
		t.Fatalf("contraindicated guest: %v", err)
	}
	k.registerSampleRVs(t)
	c := k.newClient(t)
	if _, err := c.GetResource(bg, "default/key/one"); err == nil || !strings.Contains(err.Error(), "PolicyDeny") {
		t.Fatalf("sample TEE under the default policy: %v", err)
	}
	if err := adm.SetResourcePolicy(bg, respolicy.AllowAll); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if v, err := c.GetResource(bg, "default/key/one"); err != nil || string(v) != secret {
			t.Fatalf("release: %q %v", v, err)
		}
	}
	if _, err := c.GetResource(bg, "default/key/missing"); err == nil || !strings.Contains(err.Error(), "PluginInternalError") {
		t.Fatalf("missing resource: %v", err)
	}
	if r := k.do(t, "GET", "/kbs/v0/resource/default/key/one", nil, nil); r.kind() != protocol.KindTokenNotFound {
		t.Fatalf("no token: %d %s", r.status, r.body)
	}
	// Evidence bound to another nonce: a failed attestation.
	key, _ := jose.GenerateTEEKey("EC")
	nonce, cookie := k.challenge(t, "sample")
	other, _ := k.challenge(t, "sample")
	if r := k.do(t, "POST", "/kbs/v0/attest", attestationBody(t, nonce, other, key), cookieHdr(cookie)); r.status != 401 {
		t.Fatalf("mismatched evidence: %d %s", r.status, r.body)
	}

	r := k.do(t, "GET", "/dashboard/api/summary", nil, hdr["viewer"])
	if r.status != http.StatusOK {
		t.Fatalf("summary: %d %s", r.status, r.body)
	}
	if bytes.Contains(r.body, []byte(secret)) {
		t.Error("the summary carries a resource's value")
	}
	var sum Summary
	if err := json.Unmarshal(r.body, &sum); err != nil {
		t.Fatal(err)
	}
	if want := []AttestationCount{{"sample", "affirming", 1}, {"sample", "contraindicated", 1}, {"sample", "failure", 1}}; !reflect.DeepEqual(sum.Attestations, want) {
		t.Errorf("attestations %+v, want %+v", sum.Attestations, want)
	}
	if want := []RequestCount{{"default/key/missing", "PluginInternalError", 1}, {"default/key/one", "PolicyDeny", 2},
		{"default/key/one", "TokenNotFound", 1}, {"default/key/one", "released", 2}}; !reflect.DeepEqual(sum.Requests, want) {
		t.Errorf("requests %+v, want %+v", sum.Requests, want)
	}
	var perMin int64
	for _, s := range sum.AttestationsPerMin {
		for _, p := range s.Points {
			perMin += p[1]
		}
	}
	if perMin != 3 || sum.Window.Buckets != activityBuckets {
		t.Errorf("%d attestations per minute over %+v", perMin, sum.Window)
	}
	if len(sum.ReferenceValues) != len(sampleRVs) || sum.ReferenceValues[0].Expired ||
		!sum.ReferenceValues[0].Expiration.After(time.Now().Add(300*24*time.Hour)) {
		t.Errorf("reference values %+v", sum.ReferenceValues)
	}
	kinds := map[string]int{}
	for _, p := range sum.Policies {
		kinds[p.Kind+"/"+p.ID] = p.Bytes
	}
	if kinds["resource/"+ResourcePolicyID] != len(respolicy.AllowAll) || kinds["attestation/default_cpu"] == 0 {
		t.Errorf("policies %+v", sum.Policies)
	}
	if len(sum.Replicas) != 1 || !sum.Replicas[0].Self || sum.Replicas[0].ID == "" {
		t.Errorf("replicas %+v", sum.Replicas)
	}

	// The same events as /metrics counts them.
	m := k.do(t, "GET", "/metrics", nil, nil).body
	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"kbs_attestations_total", map[string]string{"result": "success"}, 2},
		{"kbs_attestations_total", map[string]string{"result": "failure"}, 1},
		{"kbs_attestation_appraisals_total", map[string]string{"status": "affirming"}, 1},
		{"kbs_attestation_appraisals_total", map[string]string{"status": "contraindicated"}, 1},
		{"kbs_resource_releases_total", nil, 2},
		{"kbs_resource_refusals_total", map[string]string{"reason": "PolicyDeny"}, 2},
		{"kbs_resource_refusals_total", nil, 4},
		{"kbs_policy_decisions_total", map[string]string{"decision": "deny"}, 2},
	} {
		if got := testutil.MetricSum(t, m, c.name, c.labels); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
}

// TestDashboardAccess: the page loads without a token and shows nothing
// by itself; the numbers need a role the ACL allows.
func TestDashboardAccess(t *testing.T) {
	k, hdr := dashboardKBS(t)
	const api = "/dashboard/api/summary"
	k.expectRefused(t, []badCase{
		{"no token", "GET", api, nil, nil, 401, protocol.KindAdminAuth},
		{"garbage token", "GET", api, nil, bearerHdr("not.a.jwt"), 401, protocol.KindAdminAuth},
		{"role without the dashboard", "GET", api, nil, hdr["rv-reader"], 401, protocol.KindAdminAuth},
		// The dashboard shows every repository's requests: no tenant's.
		{"tenant's role", "GET", api, nil, hdr["tenant-a"], 401, protocol.KindAdminAuth},
		{"query", "GET", api + "?x=1", nil, hdr["viewer"], 404, protocol.KindInvalidPath},
	})
	for _, role := range []string{"admin", "viewer"} {
		if r := k.do(t, "GET", api, nil, hdr[role]); r.status != http.StatusOK {
			t.Errorf("%s: %d %s", role, r.status, r.body)
		}
	}
	if r := k.do(t, "POST", api, nil, hdr["admin"]); r.status != http.StatusMethodNotAllowed {
		t.Errorf("POST: %d", r.status)
	}
	for path, ctype := range map[string]string{
		"/dashboard":           "text/html; charset=utf-8",
		"/dashboard/app.js":    "text/javascript; charset=utf-8",
		"/dashboard/style.css": "text/css; charset=utf-8",
	} {
		r := k.do(t, "GET", path, nil, nil)
		if r.status != http.StatusOK || r.header.Get("Content-Type") != ctype || len(r.body) == 0 {
			t.Errorf("%s: %d %q", path, r.status, r.header.Get("Content-Type"))
		}
		if csp := r.header.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") || strings.Contains(csp, "unsafe") {
			t.Errorf("%s: CSP %q", path, csp)
		}
	}
	page := k.do(t, "GET", "/dashboard", nil, nil).body
	if bytes.Contains(page, []byte("<script>")) || bytes.Contains(page, []byte(" style=")) || bytes.Contains(page, []byte("http://")) {
		t.Error("the page has inline script, inline style or a third-party address")
	}
	for _, path := range []string{"/dashboard/index.html", "/dashboard/nope.js", "/dashboard/api", "/dashboard/api/summary/x"} {
		if r := k.do(t, "GET", path, nil, hdr["admin"]); r.status != http.StatusNotFound {
			t.Errorf("%s: %d", path, r.status)
		}
	}
}

// TestDashboardReplicas: KBS processes on one store list each other from
// their heartbeats; one that stops, or stops beating, leaves the list.
func TestDashboardReplicas(t *testing.T) {
	st := memory.New()
	now := time.Now()
	clock := func() time.Time { return now }
	servers := make([]*Server, 3)
	for i := range servers {
		cfg, err := ParseConfig([]byte(baseConfig(t.TempDir(), "")), quietLog())
		if err != nil {
			t.Fatal(err)
		}
		if servers[i], err = newServer(bg, cfg, st, sampleRegistry(), quietLog()); err != nil {
			t.Fatal(err)
		}
		servers[i].replicas.now = clock
	}
	a, b, c := servers[0].replicas, servers[1].replicas, servers[2].replicas
	ids := func(r *replicas) []string {
		t.Helper()
		list, err := r.Replicas(bg)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, rep := range list {
			if rep.Self != (rep.ID == r.self.ID) || !rep.Heartbeat.Equal(now.UTC()) {
				t.Errorf("record %+v", rep)
			}
			out = append(out, rep.ID)
		}
		return out
	}
	if got := ids(a); !reflect.DeepEqual(got, []string{a.self.ID}) {
		t.Errorf("alone: %v", got)
	}
	for _, r := range []*replicas{a, b, c} {
		if err := r.beat(bg); err != nil {
			t.Fatal(err)
		}
	}
	if got := ids(b); len(got) != 3 || got[0] != b.self.ID {
		t.Errorf("b lists %v", got)
	}
	// c stops cleanly: its record goes at once.
	ctx, cancel := context.WithCancel(bg)
	cancel()
	c.run(ctx, time.Hour, quietLog())
	if got := ids(a); len(got) != 2 || slices.Contains(got, c.self.ID) {
		t.Errorf("after c left, a lists %v", got)
	}
	// b stops beating: after replicaGone it is not listed, and a's next
	// heartbeat deletes its record.
	now = now.Add(replicaGone + time.Second)
	if got := ids(a); !reflect.DeepEqual(got, []string{a.self.ID}) {
		t.Errorf("after b went silent, a lists %v", got)
	}
	if err := a.beat(bg); err != nil {
		t.Fatal(err)
	}
	if keys, _ := st.List(bg, ReplicaNamespace); !reflect.DeepEqual(keys, []string{a.self.ID}) {
		t.Errorf("records left: %v", keys)
	}
}
