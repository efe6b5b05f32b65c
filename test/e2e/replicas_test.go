package e2e

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cocoon-cc/cocoon/guest/attester/sample"
	"github.com/cocoon-cc/cocoon/internal/testutil/dbtest"
	"github.com/cocoon-cc/cocoon/kbs/client"
	"github.com/cocoon-cc/cocoon/kbs/respolicy"
	"github.com/cocoon-cc/cocoon/protocol"
)

// replicaSet is n kbs processes on one PostgreSQL database.
type replicaSet struct {
	procs []*proc
	urls  []string
	key   string // the admin key file (the same key for all)
}

// startReplicas runs n kbs binaries sharing database db of pg (Trustee's
// configuration keys) and one sealing key; extra is more TOML.
func startReplicas(t *testing.T, pg *dbtest.Postgres, db string, n int, extra string) *replicaSet {
	t.Helper()
	sealing := filepath.Join(t.TempDir(), "sealing.key")
	key := make([]byte, 32)
	rand.Read(key)
	if err := os.WriteFile(sealing, key, 0o600); err != nil {
		t.Fatal(err)
	}
	rs := &replicaSet{}
	for range n {
		port, data := freePort(t), t.TempDir()
		cfg := fmt.Sprintf(`data_dir = %q
%s
[http_server]
sockets = ["127.0.0.1:%d"]
insecure_http = true

[storage_backend]
storage_type = "Postgres"

[storage_backend.backends.postgres]
host = %q
port = %d
db = %q
username = %q
password = %q
sealing_key_path = %q
`, data, extra, port, pg.Host, pg.Port, db, pg.User, pg.Password, sealing)
		path := filepath.Join(t.TempDir(), "kbs.toml")
		if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		url := fmt.Sprintf("http://127.0.0.1:%d", port)
		p := startKBS(t, path, url, data, nil)
		rs.procs, rs.urls = append(rs.procs, p), append(rs.urls, url)
	}
	rs.key = rs.procs[0].adminKey()
	return rs
}

func (rs *replicaSet) stop() {
	for _, p := range rs.procs {
		p.stop()
	}
}

// provision registers the sample TEE's reference values, a policy that
// releases to it and the benchmark's resource, through replica 0.
func (rs *replicaSet) provision(t *testing.T) {
	provisionSample(t, rs.urls[0], rs.key)
	setResource(t, []string{"--url", rs.urls[0]}, rs.key, "default/key/bench", []byte("benchmark secret"))
}

// failoverHandshake is handshake at replica i, then at the next ones while
// a replica cannot be reached or fails: what a guest's retry does.
func failoverHandshake(urls []string, i int, tr http.RoundTripper) error {
	var err error
	for try := range len(urls) {
		if err = handshake(urls[(i+try)%len(urls)], tr); err == nil {
			return nil
		}
	}
	return err
}

// guestLoad is guests making handshakes over replicas until stopped,
// each retrying at the next replicas when one fails.
type guestLoad struct {
	failed, done atomic.Int64
	lastErr      atomic.Value
	stopping     chan struct{}
	wg           sync.WaitGroup
}

func startGuests(urls []string, guests int, tr http.RoundTripper) *guestLoad {
	l := &guestLoad{stopping: make(chan struct{})}
	for g := range guests {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for i := g; ; i++ {
				select {
				case <-l.stopping:
					return
				default:
				}
				if err := failoverHandshake(urls, i, tr); err != nil {
					l.lastErr.Store(err)
					l.failed.Add(1)
				}
				l.done.Add(1)
			}
		}()
	}
	return l
}

// waitFor waits until n more operations are done, for a minute at most.
func (l *guestLoad) waitFor(t *testing.T, n int64) {
	deadline := time.Now().Add(time.Minute)
	for end := l.done.Load() + n; l.done.Load() < end; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the guests did %d operations in a minute", l.done.Load())
		}
	}
}

func (l *guestLoad) stop() (failed, done int64) {
	close(l.stopping)
	l.wg.Wait()
	return l.failed.Load(), l.done.Load()
}

// TestKBSReplicasFailover runs three kbs processes on one PostgreSQL under
// load, kills one with SIGKILL while guests and an admin use it, and
// restarts PostgreSQL: every guest succeeds (on another replica when its
// own died), every acknowledged admin write is there, and the replicas
// serve again once PostgreSQL is back.
func TestKBSReplicasFailover(t *testing.T) {
	pg := dbtest.StartPostgres(t)
	pg.CreateDB(t, "kbs")
	rs := startReplicas(t, pg, "kbs", 3, "[logging]\nlevel = \"warn\"\n")
	rs.provision(t)
	tr := http.DefaultTransport.(*http.Transport).Clone()
	admin := client.NewAdminWithKey(rs.urls[0], http.DefaultClient, loadKey(t, rs.key))

	var acked sync.Map // path -> value, writes replica 0 acknowledged
	stopAdmin := make(chan struct{})
	adminDone := make(chan struct{})
	go func() { // an admin writing to the replica that will die
		defer close(adminDone)
		for i := 0; ; i++ {
			select {
			case <-stopAdmin:
				return
			default:
			}
			path, value := fmt.Sprintf("default/written/w%d", i), fmt.Sprintf("value %d", i)
			if admin.SetResource(context.Background(), path, []byte(value)) == nil {
				acked.Store(path, value)
			}
		}
	}()
	load := startGuests(rs.urls, 12, tr)
	load.waitFor(t, 100)
	rs.procs[0].cmd.Process.Kill() // SIGKILL, mid-request
	rs.procs[0].cmd.Wait()
	load.waitFor(t, 100)
	close(stopAdmin)
	<-adminDone
	if failed, done := load.stop(); failed > 0 {
		t.Fatalf("%d of %d guest operations failed after retrying at every replica; last: %v", failed, done, load.lastErr.Load())
	}
	// Every write replica 0 acknowledged is served by the others.
	guest, _ := client.New(rs.urls[1], sample.Attester{}, client.Options{})
	n := 0
	acked.Range(func(path, value any) bool {
		n++
		got, err := guest.GetResource(context.Background(), path.(string))
		if err != nil || string(got) != value {
			t.Errorf("acknowledged %s = %q, %v; want %q", path, got, err, value)
		}
		return true
	})
	if n == 0 {
		t.Fatal("the admin had no write acknowledged before the kill")
	}

	// A write on a survivor, while the killed replica's lease runs out,
	// is served by the other at once.
	survivor := client.NewAdminWithKey(rs.urls[1], http.DefaultClient, loadKey(t, rs.key))
	if err := survivor.SetResource(context.Background(), "default/written/after", []byte("after the kill")); err != nil {
		t.Fatal(err)
	}
	other, _ := client.New(rs.urls[2], sample.Attester{}, client.Options{})
	if got, err := other.GetResource(context.Background(), "default/written/after"); err != nil || string(got) != "after the kill" {
		t.Fatalf("a write acknowledged on one survivor, the other serves %q, %v", got, err)
	}

	// PostgreSQL restarts: the survivors reconnect.
	pg.Restart(t)
	for _, url := range rs.urls[1:] {
		if err := handshake(url, tr); err != nil {
			t.Fatalf("%s after PostgreSQL restarted: %v", url, err)
		}
	}
}

// BenchmarkReplicas measures, in one run: handshakes/s of three kbs
// replicas on one PostgreSQL against one kbs with its embedded store, both
// with 64 clients on this machine (ratio = replicas / embedded); how long
// a resource policy set on one replica takes to decide on the others
// (from the admin's acknowledgement to the first request that sees it),
// how many requests decided by the old one after the acknowledgement, and
// how long the admin waited for it; and the guest operations lost when a replica is killed under load
// (after a guest's retry at another replica).
func BenchmarkReplicas(b *testing.B) {
	const clients = 64
	t := &testing.T{}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 128

	data := b.TempDir()
	cfg, url := kbsConfig(t, data, "http", benchKBS)
	single := startKBS(t, cfg, url, data, nil)
	defer single.stop()
	provisionSample(t, url, single.adminKey())
	setResource(t, []string{"--url", url}, single.adminKey(), "default/key/bench", []byte("benchmark secret"))
	pg := dbtest.StartPostgres(b)
	pg.CreateDB(b, "kbs")
	rs := startReplicas(t, pg, "kbs", 3, benchKBS)
	defer rs.stop()
	rs.provision(t)
	if t.Failed() {
		b.Fatal("setup failed")
	}
	// Alternate the two, twice, so that a change in what else the machine
	// runs weighs on both alike. The load generator runs its guests on
	// one CPU, as BenchmarkRCAR's.
	procs := runtime.GOMAXPROCS(1)
	var embedded, replicated time.Duration
	for range 2 {
		embedded += measureHandshakes(b, []string{url}, clients, tr)
		replicated += measureHandshakes(b, rs.urls, clients, tr)
	}
	runtime.GOMAXPROCS(procs)
	n := 2 * float64(handshakesPerRound(b))
	b.ReportMetric(n/embedded.Seconds(), "embedded-handshakes/s")
	b.ReportMetric(n/replicated.Seconds(), "3-replicas-handshakes/s")
	b.ReportMetric(embedded.Seconds()/replicated.Seconds(), "ratio")

	p50, p99, write, stale := policyPropagation(b, rs, 50)
	b.ReportMetric(ms(write), "policy-write-p50-ms")
	b.ReportMetric(ms(p50), "policy-change-p50-ms")
	b.ReportMetric(ms(p99), "policy-change-p99-ms")
	b.ReportMetric(float64(stale), "stale-decisions")

	lost, total := killUnderLoad(rs, clients, tr)
	b.ReportMetric(float64(lost), "failed-ops-after-retry")
	b.ReportMetric(float64(total), "ops-during-failover")
}

func handshakesPerRound(b *testing.B) int { return max(b.N, 2000) }

// measureHandshakes times handshakesPerRound handshakes of clients guests,
// spread round robin over urls.
func measureHandshakes(b *testing.B, urls []string, clients int, tr http.RoundTripper) time.Duration {
	var next atomic.Int64
	start := time.Now()
	run(handshakesPerRound(b), clients, func() {
		if err := handshake(urls[int(next.Add(1))%len(urls)], tr); err != nil {
			b.Error(err)
		}
	})
	return time.Since(start)
}

// policyPropagation sets the resource policy on replica 0 rounds times,
// alternately denying and allowing, and measures from each
// acknowledgement until every other replica decides by the new policy,
// counting the requests decided by the old one after the acknowledgement;
// write is the median time the admin waited for the acknowledgement.
func policyPropagation(b *testing.B, rs *replicaSet, rounds int) (p50, p99, write time.Duration, stale int) {
	ctx := context.Background()
	admin := client.NewAdminWithKey(rs.urls[0], http.DefaultClient, loadKey(&testing.T{}, rs.key))
	guests := make([]*client.Client, len(rs.urls))
	for i, url := range rs.urls {
		guests[i], _ = client.New(url, sample.Attester{}, client.Options{})
		if _, err := guests[i].GetResource(ctx, "default/key/bench"); err != nil {
			b.Fatal(err)
		}
	}
	var lat, writes []time.Duration
	for r := range rounds {
		deny := r%2 == 0
		text := respolicy.Affirming
		if deny {
			text = respolicy.DenyAll
		}
		start := time.Now()
		if err := admin.SetResourcePolicy(ctx, text); err != nil {
			b.Fatal(err)
		}
		acked := time.Now()
		writes = append(writes, acked.Sub(start))
		for _, g := range guests[1:] {
			for !decidedBy(ctx, g, deny) {
				stale++
				if time.Since(acked) > 10*time.Second {
					b.Fatalf("a replica still decided by the old policy 10 s after the change")
				}
			}
		}
		lat = append(lat, time.Since(acked))
	}
	slices.Sort(lat)
	slices.Sort(writes)
	return lat[len(lat)/2], lat[len(lat)*99/100], writes[len(writes)/2], stale
}

// decidedBy tells whether a fetch of g is decided by the policy that denies
// (deny) or by the one that allows.
func decidedBy(ctx context.Context, g *client.Client, deny bool) bool {
	_, err := g.GetResource(ctx, "default/key/bench")
	var kerr *protocol.Error
	if deny {
		return errors.As(err, &kerr) && kerr.Kind == protocol.KindPolicyDeny
	}
	return err == nil
}

// killUnderLoad runs guests over the replicas, kills replica 0 with
// SIGKILL, and counts the operations that failed on every replica.
func killUnderLoad(rs *replicaSet, clients int, tr http.RoundTripper) (lost, total int64) {
	load := startGuests(rs.urls, clients, tr)
	time.Sleep(time.Second)
	rs.procs[0].cmd.Process.Kill()
	rs.procs[0].cmd.Wait()
	time.Sleep(2 * time.Second)
	return load.stop()
}
