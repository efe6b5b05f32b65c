package postgres

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

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
	t.Run("ConcurrentInsertsFromTwoProcesses", func(t *testing.T) {
		url := fresh(t)
		storetest.Increments(t, open(t, url), open(t, url))
	})
	t.Run("MigrationsOnceAndNotDowngraded", func(t *testing.T) {
		url := fresh(t)
		open(t, url)
		open(t, url)
		c, err := pgx.Connect(ctx, url)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close(ctx)
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
