package kbs

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/cocoon-cc/cocoon/protocol"
)

// hugeRange builds a range of 100 million numbers: gigabytes, minutes.
const hugeRange = `package policy
import rego.v1
allow if count([x | some x in numbers.range(1, 100000000)]) > 0
trust_claims := {"hardware": 2} if allow
`

func policyBody(t *testing.T, text string, extra map[string]string) []byte {
	t.Helper()
	m := map[string]string{"policy": base64.RawURLEncoding.EncodeToString([]byte(text))}
	for k, v := range extra {
		m[k] = v
	}
	b, _ := json.Marshal(m)
	return b
}

// TestPolicyBudget: a policy that overruns the evaluation budget on a
// sample input is refused at upload, through either admin endpoint; one
// that overruns only on some requests is stopped on those.
func TestPolicyBudget(t *testing.T) {
	k := newKBS(t, baseConfig("@DATA@", "[limits]\npolicy_eval_mib = 16\n"))
	if got := k.srv.cfg.Limits.PolicyBudget(); got.Memory != 16<<20 || got.Time != 2e9 {
		t.Fatalf("budget %+v", got)
	}
	admin := bearerHdr(k.adminToken(t, AdminRole, 60e9))
	k.expectRefused(t, []badCase{
		{"resource policy", "POST", "/kbs/v0/resource-policy", policyBody(t, hugeRange, nil), admin, 401, protocol.KindPolicyEngine},
		{"attestation policy", "POST", "/kbs/v0/attestation-policy", policyBody(t, hugeRange, map[string]string{"policy_id": "default_cpu"}), admin, 401, protocol.KindAttestation},
	})
	r := k.do(t, "POST", "/kbs/v0/resource-policy", policyBody(t, hugeRange, nil), admin)
	if !strings.Contains(string(r.body), "over budget") {
		t.Errorf("the refusal does not say why: %s", r.body)
	}

	// The sample input asks for no "deep" query: this one passes upload.
	guarded := `package policy
import rego.v1
default allow := false
allow if {
	input.submods.cpu0["ear.status"] == "affirming"
	not deep
}
deep if {
	data.query.deep == "1"
	count([x | some x in numbers.range(1, 100000000)]) > 0
}
`
	if r := k.do(t, "POST", "/kbs/v0/resource-policy", policyBody(t, guarded, nil), admin); r.status != 200 {
		t.Fatalf("guarded policy: %d %s", r.status, r.body)
	}
	k.registerSampleRVs(t)
	k.srv.resources.store.Put(bg, ResourceNamespace, "default/key/x", []byte("x"))
	c := k.newClient(t)
	tok := mustToken(t, c)
	var kerr *protocol.Error
	if _, err := c.GetResource(bg, "default/key/x?deep=1"); !errors.As(err, &kerr) || kerr.Kind != protocol.KindPolicyEngine ||
		!strings.Contains(kerr.Detail, "over budget") {
		t.Errorf("deep query: %v", err)
	}
	r = k.do(t, "GET", "/kbs/v0/resource/default/key/x", nil, bearerHdr(tok))
	if r.status != 200 {
		t.Errorf("after an overrun: %d %s", r.status, r.body)
	}
}

const authBody = `{"version":"0.4.0","tee":"sample","extra-params":{}}`

// expectTooMany checks a 429 in Trustee's error shape with its Retry-After.
func expectTooMany(t *testing.T, r response, retryAfter string) {
	t.Helper()
	if r.status != http.StatusTooManyRequests || r.kind() != protocol.KindTooManyRequests {
		t.Errorf("got %d %s, want 429 TooManyRequests", r.status, r.body)
	}
	if got := r.header.Get("Retry-After"); got != retryAfter {
		t.Errorf("Retry-After %q, want %q", got, retryAfter)
	}
}

// TestRCARRateLimit: a client that calls /auth and /attest faster than its
// bucket refills gets 429 with Retry-After until it refills.
func TestRCARRateLimit(t *testing.T) {
	k := newKBS(t, baseConfig("@DATA@", "[limits]\nrcar_rate = 0.5\nrcar_burst = 3\n"))
	now := time.Now()
	k.srv.limiter.now = func() time.Time { return now }
	for i := range 3 {
		if r := k.do(t, "POST", "/kbs/v0/auth", []byte(authBody), nil); r.status != 200 {
			t.Fatalf("auth %d within the burst: %d %s", i, r.status, r.body)
		}
	}
	before := snapshot(t, k.srv.store)
	expectTooMany(t, k.do(t, "POST", "/kbs/v0/auth", []byte(authBody), nil), "2")
	expectTooMany(t, k.do(t, "POST", "/kbs/v0/attest", []byte("{}"), nil), "2")
	if !sameState(before, snapshot(t, k.srv.store)) {
		t.Error("a refused call changed the store")
	}
	// Other endpoints are not charged.
	if r := k.do(t, "GET", "/healthz", nil, nil); r.status != 200 {
		t.Errorf("healthz: %d", r.status)
	}
	now = now.Add(1500 * time.Millisecond)
	expectTooMany(t, k.do(t, "POST", "/kbs/v0/auth", []byte(authBody), nil), "1")
	now = now.Add(2 * time.Second)
	if r := k.do(t, "POST", "/kbs/v0/auth", []byte(authBody), nil); r.status != 200 {
		t.Errorf("after the refill: %d %s", r.status, r.body)
	}
}

// TestClientLimiterKeys: buckets are per IPv4 address and per IPv6 /64,
// and their number is bounded.
func TestClientLimiterKeys(t *testing.T) {
	now := time.Now()
	l := newClientLimiter(LimitsConfig{RCARRate: 1, RCARBurst: 1}, func() time.Time { return now })
	for _, c := range []struct {
		remote string
		ok     bool
	}{
		{"192.0.2.1:1000", true},
		{"192.0.2.1:2000", false}, // another port, the same client
		{"[::ffff:192.0.2.1]:3000", false},
		{"192.0.2.2:1000", true},
		{"[2001:db8:1:2::1]:1000", true},
		{"[2001:db8:1:2:ffff::9]:1000", false}, // the same /64
		{"[2001:db8:1:3::1]:1000", true},
		{"@", true}, // unparsable addresses share one bucket
		{"", false},
	} {
		if _, ok := l.take(c.remote); ok != c.ok {
			t.Errorf("%s: ok = %v", c.remote, ok)
		}
	}
	for i := range maxClients + 10 {
		l.take(netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), 1).String())
	}
	if n := len(l.buckets); n > maxClients {
		t.Errorf("%d buckets kept", n)
	}
}

// TestSessionCap: at max_sessions attested sessions the KBS answers 429
// to new handshakes, still answers the attested ones, and takes new ones
// again once expired sessions are swept.
func TestSessionCap(t *testing.T) {
	k := newKBS(t, baseConfig("@DATA@", "session_storage_type = \"Memory\"\n[limits]\nmax_sessions = 2\n"))
	k.registerSampleRVs(t)
	mustToken(t, k.newClient(t))
	nonce, cookie := k.challenge(t, "sample")
	att := attestationBody(t, nonce, nonce, testTEEKey(t))
	first := k.do(t, "POST", "/kbs/v0/attest", att, cookieHdr(cookie))
	if first.status != 200 {
		t.Fatalf("attest: %d %s", first.status, first.body)
	}
	if n := k.srv.sessions.live.Load(); n != 2 {
		t.Fatalf("live sessions %d, want 2", n)
	}
	r := k.do(t, "POST", "/kbs/v0/auth", []byte(authBody), nil)
	expectTooMany(t, r, "60")
	if len((&http.Response{Header: r.header}).Cookies()) != 0 {
		t.Error("a refused auth set a cookie")
	}
	var kerr *protocol.Error
	if _, err := k.newClient(t).Attest(bg); !errors.As(err, &kerr) || kerr.Kind != protocol.KindTooManyRequests {
		t.Errorf("new client at the cap: %v", err)
	}
	// An attested session is answered with its token as before.
	if again := k.do(t, "POST", "/kbs/v0/attest", att, cookieHdr(cookie)); again.status != 200 || string(again.body) != string(first.body) {
		t.Errorf("attested session at the cap: %d %s", again.status, again.body)
	}
	// Expired sessions are swept and counted out.
	k.srv.sessions.now = func() time.Time { return time.Now().Add(time.Hour) }
	if n, err := k.srv.sessions.sweep(bg); err != nil || n != 2 {
		t.Fatalf("sweep = %d, %v", n, err)
	}
	k.srv.sessions.now = time.Now
	if n := k.srv.sessions.live.Load(); n != 0 {
		t.Errorf("live sessions after the sweep %d", n)
	}
	mustToken(t, k.newClient(t))
}
