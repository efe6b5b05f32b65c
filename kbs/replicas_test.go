package kbs

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/cookiejar"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cocoon-cc/cocoon/guest/attester/sample"
	"github.com/cocoon-cc/cocoon/internal/testutil/dbtest"
	"github.com/cocoon-cc/cocoon/kbs/client"
	"github.com/cocoon-cc/cocoon/kbs/respolicy"
	"github.com/cocoon-cc/cocoon/protocol"
	"github.com/cocoon-cc/cocoon/store/sealed"
)

// sharedConfig is a plain-HTTP configuration on a PostgreSQL store, with
// sessions in sessionStorage (empty: the default, held by the clients).
func sharedConfig(t testing.TB, pgURL, redisURL, sessionStorage, sealingKey string) string {
	t.Setenv(PostgresURLEnv, pgURL)
	extra := ""
	if sessionStorage != "" {
		extra = fmt.Sprintf("session_storage_type = %q", sessionStorage)
	}
	return fmt.Sprintf(`data_dir = "@DATA@"
%s
[http_server]
insecure_http = true

[storage_backend]
storage_type = "Postgres"

[storage_backend.backends.postgres]
sealing_key_path = %q

[storage_backend.backends.redis]
url = %q
`, extra, sealingKey, redisURL)
}

func writeSealingKey(t testing.TB) string {
	path := filepath.Join(t.TempDir(), "sealing.key")
	key := make([]byte, 32)
	rand.Read(key)
	if err := os.WriteFile(path, key, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// Two replicas on one PostgreSQL: a guest attests on one and fetches from
// the other with its session cookie alone; keys, resources, policies and
// reference values changed on one are seen by the other at once.
func TestReplicasShareOneStore(t *testing.T) {
	pg := dbtest.StartPostgres(t)
	rd := dbtest.StartRedis(t)
	for i, sessions := range []string{SessionsInCookie, "Postgres", "Redis"} {
		t.Run(sessions+"Sessions", func(t *testing.T) {
			cfg := sharedConfig(t, pg.CreateDB(t, fmt.Sprintf("replicas%d", i)), rd.URL()+fmt.Sprintf("/%d", i), sessions, writeSealingKey(t))
			a, b := newKBS(t, cfg), newKBS(t, cfg)
			testReplicas(t, a, b)
		})
	}
	t.Run("Tenants", func(t *testing.T) {
		acls, key := tenantACLs(t)
		cfg := sharedConfig(t, pg.CreateDB(t, "tenants"), rd.URL(), "", writeSealingKey(t)) + acls
		a, b := newKBS(t, cfg), newKBS(t, cfg)
		testTenants(t, a, b, key, logTo(a, b))
	})
	t.Run("WrongSealingKey", func(t *testing.T) {
		url := pg.CreateDB(t, "wrongkey")
		newKBS(t, sharedConfig(t, url, rd.URL(), "", writeSealingKey(t)))
		parsed, err := ParseConfig([]byte(sharedConfig(t, url, rd.URL(), "", writeSealingKey(t))), quietLog())
		if err != nil {
			t.Fatal(err)
		}
		parsed.DataDir = t.TempDir()
		if _, err := New(bg, parsed, sampleRegistry(), quietLog()); err == nil || !errors.Is(err, sealed.ErrTampered) {
			t.Fatalf("a replica with another sealing key started: %v", err)
		}
	})
	t.Run("MissingSealingKey", func(t *testing.T) {
		parsed, err := ParseConfig([]byte(sharedConfig(t, pg.CreateDB(t, "nokey"), rd.URL(), "", filepath.Join(t.TempDir(), "absent"))), quietLog())
		if err != nil {
			t.Fatal(err)
		}
		parsed.DataDir = t.TempDir()
		if _, err := New(bg, parsed, sampleRegistry(), quietLog()); err == nil || !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("a replica without its sealing key file started: %v", err)
		}
	})
}

func testReplicas(t *testing.T, a, b *testKBS) {
	ctx := bg
	// One admin key and one token key for both.
	if !a.adminKey.Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(b.adminKey.Public()) {
		t.Fatal("the replicas generated different admin keys")
	}
	ja, jb := a.do(t, "GET", "/.well-known/jwks.json", nil, nil), b.do(t, "GET", "/.well-known/jwks.json", nil, nil)
	if !bytes.Equal(ja.body, jb.body) {
		t.Fatalf("the replicas sign with different keys:\n%s\n%s", ja.body, jb.body)
	}
	a.registerSampleRVs(t)
	// The default policy never releases to the sample TEE.
	if err := a.admin(t).SetResourcePolicy(ctx, respolicy.Affirming); err != nil {
		t.Fatal(err)
	}
	if err := a.admin(t).SetResource(ctx, "default/key/one", []byte("secret-1")); err != nil {
		t.Fatal(err)
	}

	// Attest on a, fetch from b with a's session cookie only.
	jar, _ := cookiejar.New(nil)
	hc := &http.Client{Jar: jar, Timeout: 30 * time.Second}
	ca, err := client.New(a.ts.URL, sample.Attester{}, client.Options{HTTP: hc})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ca.Attest(ctx); err != nil {
		t.Fatal(err)
	}
	fetch := func(k *testKBS) ([]byte, error) {
		req, _ := http.NewRequest("GET", k.ts.URL+"/kbs/v0/resource/default/key/one", nil)
		for _, c := range jar.Cookies(req.URL) { // cookies are per host, not per port
			req.AddCookie(c)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != 200 {
			var info protocol.ErrorInformation
			json.NewDecoder(resp.Body).Decode(&info)
			e, _ := protocol.ParseErrorInformation(info)
			return nil, e
		}
		var r protocol.Response
		if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
			t.Fatal(err)
		}
		return ca.Key().Decrypt(&r)
	}
	if v, err := fetch(b); err != nil || string(v) != "secret-1" {
		t.Fatalf("fetch from the other replica = %q, %v", v, err)
	}
	// A resource changed on b is what a serves.
	if err := b.admin(t).SetResource(ctx, "default/key/one", []byte("secret-2")); err != nil {
		t.Fatal(err)
	}
	if v, err := fetch(a); err != nil || string(v) != "secret-2" {
		t.Fatalf("fetch after the other replica's change = %q, %v", v, err)
	}
	// A policy replaced on a is the one b decides on, on the next request:
	// b's compiled policy and its cached decisions are stale.
	for range 3 {
		fetch(b) // warm b's decision cache
	}
	if err := a.admin(t).SetResourcePolicy(ctx, "package policy\ndefault allow = false\n"); err != nil {
		t.Fatal(err)
	}
	var perr *protocol.Error
	if _, err := fetch(b); !errors.As(err, &perr) || perr.Kind != protocol.KindPolicyDeny {
		t.Fatalf("b granted on the policy a replaced: %v", err)
	}
	if err := b.admin(t).SetResourcePolicy(ctx, respolicy.Affirming); err != nil {
		t.Fatal(err)
	}
	if v, err := fetch(a); err != nil || string(v) != "secret-2" {
		t.Fatalf("a after b restored the policy: %q, %v", v, err)
	}
	// Reference values registered on b change a's appraisals at once.
	cb, _ := client.New(b.ts.URL, sample.Attester{}, client.Options{})
	if _, err := cb.GetResource(ctx, "default/key/one"); err != nil {
		t.Fatal(err)
	}
	if err := b.admin(t).RegisterSampleReferenceValue(ctx, "launch_digest", []string{"other"}); err != nil {
		t.Fatal(err)
	}
	c2, _ := client.New(a.ts.URL, sample.Attester{}, client.Options{})
	if _, err := c2.GetResource(ctx, "default/key/one"); !errors.As(err, &perr) || perr.Kind != protocol.KindPolicyDeny {
		t.Fatalf("a appraised on the reference values b replaced: %v", err)
	}
	// Deleted on a, gone on b.
	if err := a.admin(t).DeleteResource(ctx, "default/key/one"); err != nil {
		t.Fatal(err)
	}
	b.registerSampleRVs(t)
	c3, _ := client.New(b.ts.URL, sample.Attester{}, client.Options{})
	if _, err := c3.GetResource(ctx, "default/key/one"); !protocol.IsResourceNotFound(err) {
		t.Fatalf("b after a deleted the resource: %v", err)
	}
	// Each lists the other on its dashboard, from their heartbeats.
	for _, k := range []*testKBS{a, b} {
		if err := k.srv.replicas.beat(ctx); err != nil {
			t.Fatal(err)
		}
	}
	sum, err := a.srv.summary(ctx)
	if err != nil || len(sum.Replicas) != 2 || sum.Replicas[1].ID != b.srv.replicas.self.ID {
		t.Fatalf("a's dashboard lists replicas %+v, %v", sum, err)
	}
}
