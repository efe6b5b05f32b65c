package postgres

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/cocoon-cc/cocoon/internal/testutil/dbtest"
	"github.com/cocoon-cc/cocoon/store"
	"github.com/cocoon-cc/cocoon/store/storetest"
)

func open(t *testing.T, url string, versioned ...string) *Store {
	t.Helper()
	s, err := Open(context.Background(), url, Options{Versioned: versioned})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// leased waits until s holds its lease.
func leased(t *testing.T, s *Store) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		if _, ok := s.leases.current(nil); ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("no lease after 10 s")
		}
	}
}

// connect opens a connection of the test's own to url.
func connect(t *testing.T, url string) *pgx.Conn {
	t.Helper()
	c, err := pgx.Connect(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	return c
}

// roundTrips counts the connections s took from its pool: one a query.
func roundTrips(s *Store) int64 { return s.pool.Stat().AcquireCount() }

// timed runs fn and returns how long it took.
func timed(t *testing.T, fn func() error) time.Duration {
	t.Helper()
	start := time.Now()
	if err := fn(); err != nil {
		t.Fatal(err)
	}
	return time.Since(start)
}

// One cluster for the whole package: each conformance run gets its own
// database.
func TestPostgres(t *testing.T) {
	pg := dbtest.StartPostgres(t)
	ctx := context.Background()
	n := 0
	fresh := func(t *testing.T) string {
		n++
		return pg.CreateDB(t, fmt.Sprintf("t%d", n))
	}
	// leasedPair is two replicas of a fresh database, holding leases.
	leasedPair := func(t *testing.T) (url string, a, b *Store) {
		url = fresh(t)
		a, b = open(t, url, "policy"), open(t, url, "policy")
		leased(t, a)
		leased(t, b)
		return url, a, b
	}
	t.Run("Conformance", func(t *testing.T) {
		storetest.Run(t, func(t *testing.T) store.Store { return open(t, fresh(t), "ns") })
	})
	t.Run("TwoProcessesShareWritesAndVersions", func(t *testing.T) {
		url := fresh(t)
		a, b := open(t, url, "policy"), open(t, url, "policy")
		v0, err := b.Versions(ctx, "policy")
		if err != nil {
			t.Fatal(err)
		}
		if err := a.Put(ctx, "policy", "p", []byte("one")); err != nil {
			t.Fatal(err)
		}
		v1, _ := b.Versions(ctx, "policy")
		if v1[0] <= v0[0] {
			t.Fatalf("version did not move with a write of the other process: %d -> %d", v0[0], v1[0])
		}
		if v, err := b.Get(ctx, "policy", "p"); err != nil || string(v) != "one" {
			t.Fatalf("other process reads %q, %v", v, err)
		}
		// Writes to other namespaces leave it alone.
		if err := a.Put(ctx, "sessions", "s", []byte("x")); err != nil {
			t.Fatal(err)
		}
		if v2, _ := b.Versions(ctx, "policy"); v2[0] != v1[0] {
			t.Fatalf("a write elsewhere moved the version: %d -> %d", v1[0], v2[0])
		}
		if _, err := b.Versions(ctx, "sessions"); !errors.Is(err, store.ErrUnversioned) {
			t.Fatalf("Versions of an unversioned namespace: %v", err)
		}
	})
	t.Run("LeasedReadsSeeEveryAcknowledgedWrite", func(t *testing.T) {
		_, a, b := leasedPair(t)
		for i := range 100 {
			want := fmt.Sprint(i)
			if err := a.Put(ctx, "policy", "p", []byte(want)); err != nil {
				t.Fatal(err)
			}
			// Acknowledged: b decides by it, whatever it cached.
			if v, err := b.Get(ctx, "policy", "p"); err != nil || string(v) != want {
				t.Fatalf("write %d acknowledged, the other replica reads %q, %v", i, v, err)
			}
			before := roundTrips(b)
			v, err := b.Get(ctx, "policy", "p")
			if _, verr := b.Versions(ctx, "policy"); err != nil || verr != nil || string(v) != want {
				t.Fatalf("read again: %q, %v, %v", v, err, verr)
			}
			if n := roundTrips(b) - before; n != 0 {
				t.Fatalf("a cached read and the counters took %d round trips", n)
			}
		}
		if err := a.Delete(ctx, "policy", "p"); err != nil {
			t.Fatal(err)
		}
		if _, err := b.Get(ctx, "policy", "p"); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("deleted, the other replica reads %v", err)
		}
	})
	t.Run("ConcurrentReadersNeverGoBack", func(t *testing.T) {
		_, a, b := leasedPair(t)
		a.Put(ctx, "policy", "p", []byte("0"))
		var acked atomic.Int64
		done := make(chan struct{})
		errs := make(chan error, 4)
		for range 4 {
			go func() {
				for {
					select {
					case <-done:
						errs <- nil
						return
					default:
					}
					floor := acked.Load()
					v, err := b.Get(ctx, "policy", "p")
					n, _ := strconv.ParseInt(string(v), 10, 64)
					if err != nil || n < floor {
						errs <- fmt.Errorf("read %q, %v after %d was acknowledged", v, err, floor)
						return
					}
				}
			}()
		}
		for i := int64(1); i <= 200; i++ {
			if err := a.Put(ctx, "policy", "p", []byte(strconv.FormatInt(i, 10))); err != nil {
				t.Fatal(err)
			}
			acked.Store(i)
		}
		close(done)
		for range 4 {
			if err := <-errs; err != nil {
				t.Fatal(err)
			}
		}
	})
	t.Run("AWriteWaitsForASilentReplicaUntilItsLeaseEnds", func(t *testing.T) {
		url := fresh(t)
		a := open(t, url, "policy")
		leased(t, a)
		c := connect(t, url)
		// A replica that took a lease and died without a word.
		if _, err := c.Exec(ctx, "INSERT INTO cocoon_replicas VALUES ('killed', now() + interval '1 second')"); err != nil {
			t.Fatal(err)
		}
		if d := timed(t, func() error { return a.Put(ctx, "policy", "p", []byte("x")) }); d < 800*time.Millisecond {
			t.Fatalf("the write was acknowledged after %v, before the silent replica's lease ended", d)
		}
		if d := timed(t, func() error { return a.Put(ctx, "policy", "p", []byte("y")) }); d > time.Second {
			t.Fatalf("a write after the lease ended took %v", d)
		}
		// A replica closed gives its lease up: no write waits for it.
		b, err := Open(ctx, url, Options{Versioned: []string{"policy"}, Lease: time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		leased(t, b)
		b.Close()
		if d := timed(t, func() error { return a.Put(ctx, "policy", "p", []byte("z")) }); d > time.Second {
			t.Fatalf("a write after the other replica closed took %v", d)
		}
	})
	t.Run("AnUpdateThatWritesNothingWaitsForNoOne", func(t *testing.T) {
		_, _, b := leasedPair(t)
		// b never heard the other's acknowledgements of the counters as
		// they stand: it must not wait for them.
		if d := timed(t, func() error {
			return b.Update(ctx, "policy", "missing", func([]byte) ([]byte, error) { return nil, nil })
		}); d > time.Second {
			t.Fatalf("an update that wrote nothing took %v", d)
		}
	})
	t.Run("AReplicaCutOffReadsTheDatabase", func(t *testing.T) {
		url, a, b := leasedPair(t)
		b.Put(ctx, "policy", "p", []byte("old"))
		b.Get(ctx, "policy", "p") // cached
		c := connect(t, url)
		for i := range 20 {
			// b's lease connection is cut, then a writes: b, leased or
			// not, reads what a wrote.
			if _, err := c.Exec(ctx, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
				"cocoon-lease-"+b.leases.id); err != nil {
				t.Fatal(err)
			}
			want := fmt.Sprint(i)
			if err := a.Put(ctx, "policy", "p", []byte(want)); err != nil {
				t.Fatal(err)
			}
			if v, err := b.Get(ctx, "policy", "p"); err != nil || string(v) != want {
				t.Fatalf("cut off, b reads %q, %v; want %q", v, err, want)
			}
		}
		leased(t, b) // and takes a lease again
	})
	t.Run("ConcurrentInsertsFromTwoProcesses", func(t *testing.T) {
		url := fresh(t)
		storetest.Increments(t, open(t, url), open(t, url))
	})
	t.Run("MigrationsOnceAndNotDowngraded", func(t *testing.T) {
		url := fresh(t)
		open(t, url)
		open(t, url)
		c := connect(t, url)
		var rows int
		c.QueryRow(ctx, "SELECT count(*) FROM cocoon_schema").Scan(&rows)
		if rows != len(migrations) {
			t.Fatalf("cocoon_schema has %d rows, want %d", rows, len(migrations))
		}
		c.Exec(ctx, "INSERT INTO cocoon_schema VALUES (999)")
		if _, err := Open(ctx, url, Options{}); !errors.Is(err, ErrSchemaTooNew) {
			t.Fatalf("Open of a newer schema: %v", err)
		}
	})
	t.Run("MigratesTheFirstSchema", func(t *testing.T) {
		url := fresh(t)
		// The database as the first schema left it: a versioned table
		// whose trigger notifies nobody, and no leases.
		if _, err := connect(t, url).Exec(ctx, `CREATE TABLE cocoon_schema (version INT NOT NULL);
			INSERT INTO cocoon_schema VALUES (1);`+migrations[0]+`
			CREATE TABLE policy (key TEXT PRIMARY KEY, value BYTEA NOT NULL);
			INSERT INTO cocoon_versions (ns) VALUES ('policy');
			CREATE TRIGGER cocoon_version AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON policy
				FOR EACH STATEMENT EXECUTE FUNCTION cocoon_bump_version('policy');
			INSERT INTO policy VALUES ('p', 'old');`); err != nil {
			t.Fatal(err)
		}
		a, b := open(t, url, "policy"), open(t, url, "policy")
		leased(t, a)
		leased(t, b)
		if v, err := b.Get(ctx, "policy", "p"); err != nil || string(v) != "old" {
			t.Fatalf("migrated, reads %q, %v", v, err)
		}
		if err := a.Put(ctx, "policy", "p", []byte("new")); err != nil {
			t.Fatal(err)
		}
		if v, err := b.Get(ctx, "policy", "p"); err != nil || string(v) != "new" {
			t.Fatalf("a write after the migration, the other replica reads %q, %v", v, err)
		}
	})
	t.Run("BadInput", func(t *testing.T) {
		s := open(t, fresh(t))
		if err := s.Put(ctx, `x"; DROP TABLE cocoon_versions; --`, "k", []byte("v")); !errors.Is(err, ErrNamespace) {
			t.Fatalf("Put to a namespace that is no table name: %v", err)
		}
		if _, err := Open(ctx, "postgres://u:secret-pw@[::1", Options{}); err == nil || strings.Contains(err.Error(), "secret-pw") {
			t.Fatalf("a bad connection string: %v", err)
		}
		key := "k'; DROP TABLE ns; --"
		if err := s.Put(ctx, "ns", key, []byte("v")); err != nil {
			t.Fatal(err)
		}
		if v, err := s.Get(ctx, "ns", key); err != nil || string(v) != "v" {
			t.Fatalf("Get = %q, %v", v, err)
		}
	})
	t.Run("SurvivesServerRestart", func(t *testing.T) {
		s := open(t, fresh(t), "policy")
		if err := s.Put(ctx, "policy", "k", []byte("before")); err != nil {
			t.Fatal(err)
		}
		pg.Restart(t)
		// The pool's connections were cut: the next calls reconnect.
		if v, err := s.Get(ctx, "policy", "k"); err != nil || string(v) != "before" {
			t.Fatalf("Get after restart = %q, %v", v, err)
		}
		if err := s.Put(ctx, "policy", "k", []byte("after")); err != nil {
			t.Fatalf("Put after restart: %v", err)
		}
		if _, err := s.Versions(ctx, "policy"); err != nil {
			t.Fatalf("Versions after restart: %v", err)
		}
	})
}
