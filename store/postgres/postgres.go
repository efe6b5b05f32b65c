// Package postgres is a Store in PostgreSQL that any number of KBS
// replicas share. Each namespace is a table, as in Trustee (`key` TEXT
// primary key, `value` BYTEA). The namespaces named at Open keep a version
// counter (store.Versioner) in cocoon_versions, bumped by a statement
// trigger inside every writing transaction, so a replica can tell whether
// what it caches of them is still current; while it holds a lease (see
// lease.go) it is told every bump before the write is acknowledged, and
// reads the counters and caches those namespaces' values without a round
// trip. The schema is versioned: migrations run in order, once, under an
// advisory lock, so replicas starting together do not race.
package postgres

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/cocoon-cc/cocoon/store"
)

// Errors of the PostgreSQL store.
var (
	// ErrSchemaTooNew: the database was migrated by a newer Cocoon.
	ErrSchemaTooNew = errors.New("store: database schema is newer than this program knows")
	// ErrNamespace: a namespace name that cannot be a table name.
	ErrNamespace = errors.New("store: namespace name not usable as a PostgreSQL table")
)

// DefaultMaxConns is the pool size unless the connection string sets
// pool_max_conns: commits wait for PostgreSQL's fsync while holding a
// connection, and concurrent commits share one (group commit).
const DefaultMaxConns = 16

// retryFor bounds how long an operation retries while the server is
// unreachable (a restart, a failover).
const retryFor = 15 * time.Second

// lockID is the advisory lock that serialises migrations and table
// creation between replicas ("cocoon" in ASCII).
const lockID = 0x636f636f6f6e

// migrations are the schema versions, applied in order; the number of the
// last one applied is kept in cocoon_schema. Never edit one: append.
var migrations = []string{
	// 1: version counters and the trigger function that bumps them.
	`CREATE TABLE cocoon_versions (ns TEXT PRIMARY KEY, version BIGINT NOT NULL DEFAULT 0);
	CREATE FUNCTION cocoon_bump_version() RETURNS trigger LANGUAGE plpgsql AS $$
	BEGIN
		UPDATE cocoon_versions SET version = version + 1 WHERE ns = TG_ARGV[0];
		RETURN NULL;
	END $$;`,
	// 2: the trigger tells listening replicas every bump; the replicas'
	// leases.
	`CREATE OR REPLACE FUNCTION cocoon_bump_version() RETURNS trigger LANGUAGE plpgsql AS $$
	DECLARE v BIGINT;
	BEGIN
		UPDATE cocoon_versions SET version = version + 1 WHERE ns = TG_ARGV[0] RETURNING version INTO v;
		PERFORM pg_notify('` + channelVersions + `', TG_ARGV[0] || ' ' || v);
		RETURN NULL;
	END $$;
	CREATE TABLE cocoon_replicas (id TEXT PRIMARY KEY, lease_until TIMESTAMPTZ NOT NULL);`,
}

// validNS is what a namespace may be named: it is used as a table name
// and, for versioned ones, as a literal in the trigger's definition.
var validNS = regexp.MustCompile(`^[a-z][a-z0-9_-]{0,62}$`)

// Options tune Open.
type Options struct {
	// Versioned names the namespaces that keep a version counter.
	Versioned []string
	// Lease is how long a replica's lease lasts (DefaultLease when zero).
	Lease time.Duration
	// Log tells when the lease is lost and held again (nil: not told).
	Log *slog.Logger
}

// Store is a store.Store and store.Versioner over a pgx connection pool.
type Store struct {
	pool       *pgxpool.Pool
	connConfig *pgx.ConnConfig
	versioned  map[string]bool
	leases     *leases // nil without versioned namespaces

	mu     sync.Mutex
	tables map[string]bool // created (or found) by this process
}

// Open connects to the database of connString (a URL or key=value DSN,
// as libpq's), migrates its schema and creates the versioned namespaces'
// tables.
func Open(ctx context.Context, connString string, opts Options) (*Store, error) {
	cfg, err := pgxpool.ParseConfig(connString)
	if err != nil {
		// pgx's message may quote the connection string, password included.
		return nil, errors.New("store: postgres connection string does not parse")
	}
	if !strings.Contains(connString, "pool_max_conns") {
		cfg.MaxConns = DefaultMaxConns
	}
	cfg.HealthCheckPeriod = 5 * time.Second
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("store: postgres: %w", err)
	}
	s := &Store{pool: pool, connConfig: cfg.ConnConfig, versioned: map[string]bool{}, tables: map[string]bool{}}
	for _, ns := range opts.Versioned {
		if !validNS.MatchString(ns) {
			pool.Close()
			return nil, fmt.Errorf("%w: %q", ErrNamespace, ns)
		}
		s.versioned[ns] = true
	}
	if err := s.do(ctx, s.migrate); err != nil {
		pool.Close()
		return nil, err
	}
	for _, ns := range opts.Versioned {
		if err := s.ensure(ctx, ns); err != nil {
			pool.Close()
			return nil, err
		}
	}
	if len(opts.Versioned) > 0 {
		s.leases = newLeases(cmp.Or(opts.Lease, DefaultLease), opts.Log)
		lctx, stop := context.WithCancel(context.Background())
		s.leases.stop = stop
		go s.listen(lctx)
		// Writes hear the other replicas' acknowledgements only once
		// this one listens; without a lease yet, it reads the database.
		select {
		case <-s.leases.first:
		case <-time.After(firstLease):
		case <-ctx.Done():
		}
	}
	return s, nil
}

// migrate brings the schema to the last version.
func (s *Store) migrate(ctx context.Context) error {
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", lockID); err != nil {
			return fmt.Errorf("store: postgres lock: %w", err)
		}
		if _, err := tx.Exec(ctx, "CREATE TABLE IF NOT EXISTS cocoon_schema (version INT NOT NULL)"); err != nil {
			return fmt.Errorf("store: postgres schema table: %w", err)
		}
		var cur int
		if err := tx.QueryRow(ctx, "SELECT coalesce(max(version), 0) FROM cocoon_schema").Scan(&cur); err != nil {
			return fmt.Errorf("store: postgres schema version: %w", err)
		}
		if cur > len(migrations) {
			return fmt.Errorf("%w: version %d, this one knows %d", ErrSchemaTooNew, cur, len(migrations))
		}
		for i := cur; i < len(migrations); i++ {
			if _, err := tx.Exec(ctx, migrations[i]); err != nil {
				return fmt.Errorf("store: postgres migration %d: %w", i+1, err)
			}
			if _, err := tx.Exec(ctx, "INSERT INTO cocoon_schema (version) VALUES ($1)", i+1); err != nil {
				return fmt.Errorf("store: postgres migration %d: %w", i+1, err)
			}
		}
		return nil
	})
}

// table names ns's table, or fails for a name that cannot be one.
func table(ns string) (string, error) {
	if !validNS.MatchString(ns) {
		return "", fmt.Errorf("%w: %q", ErrNamespace, ns)
	}
	return pgx.Identifier{ns}.Sanitize(), nil
}

// ensure creates ns's table (with its counter and trigger when versioned)
// unless this process already did.
func (s *Store) ensure(ctx context.Context, ns string) error {
	s.mu.Lock()
	done := s.tables[ns]
	s.mu.Unlock()
	if done {
		return nil
	}
	t, err := table(ns)
	if err != nil {
		return err
	}
	err = s.do(ctx, func(ctx context.Context) error {
		return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", lockID); err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, "CREATE TABLE IF NOT EXISTS "+t+" (key TEXT PRIMARY KEY, value BYTEA NOT NULL)"); err != nil {
				return err
			}
			if !s.versioned[ns] {
				return nil
			}
			if _, err := tx.Exec(ctx, "INSERT INTO cocoon_versions (ns) VALUES ($1) ON CONFLICT DO NOTHING", ns); err != nil {
				return err
			}
			// ns matched validNS: it is safe inside the quotes.
			_, err := tx.Exec(ctx, "CREATE OR REPLACE TRIGGER cocoon_version AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON "+
				t+" FOR EACH STATEMENT EXECUTE FUNCTION cocoon_bump_version('"+ns+"')")
			return err
		})
	})
	if err != nil {
		return fmt.Errorf("store: postgres create %s: %w", ns, err)
	}
	s.mu.Lock()
	s.tables[ns] = true
	s.mu.Unlock()
	return nil
}

// missingTable: the namespace was never written, by anyone.
func missingTable(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "42P01"
}

// Get implements store.Store. Values of versioned namespaces are cached
// while the lease holds, under the counter they were read at.
func (s *Store) Get(ctx context.Context, ns, key string) ([]byte, error) {
	if s.leases == nil || !s.versioned[ns] {
		return s.get(ctx, ns, key)
	}
	v, version, ok, leased := s.leases.get(ns, key)
	if ok {
		return bytes.Clone(v), nil
	}
	v, err := s.get(ctx, ns, key)
	if err == nil && leased {
		s.leases.keep(ns, key, version, bytes.Clone(v))
	}
	return v, err
}

func (s *Store) get(ctx context.Context, ns, key string) ([]byte, error) {
	t, err := table(ns)
	if err != nil {
		return nil, err
	}
	var v []byte
	err = s.do(ctx, func(ctx context.Context) error {
		return s.pool.QueryRow(ctx, "SELECT value FROM "+t+" WHERE key = $1", key).Scan(&v)
	})
	if errors.Is(err, pgx.ErrNoRows) || missingTable(err) {
		return nil, store.ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("store: postgres get %s: %w", ns, err)
	}
	return v, nil
}

// Put implements store.Store.
func (s *Store) Put(ctx context.Context, ns, key string, value []byte) error {
	return s.exec(ctx, ns, "put", "INSERT INTO %s (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value", key, value)
}

// Delete implements store.Store.
func (s *Store) Delete(ctx context.Context, ns, key string) error {
	return s.exec(ctx, ns, "delete", "DELETE FROM %s WHERE key = $1", key)
}

func (s *Store) exec(ctx context.Context, ns, op, sql string, args ...any) error {
	if err := s.ensure(ctx, ns); err != nil {
		return err
	}
	t, _ := table(ns)
	err := s.do(ctx, func(ctx context.Context) error {
		_, err := s.pool.Exec(ctx, fmt.Sprintf(sql, t), args...)
		return err
	})
	if err != nil {
		return fmt.Errorf("store: postgres %s %s: %w", op, ns, err)
	}
	return s.settle(ctx, ns)
}

// List implements store.Store.
func (s *Store) List(ctx context.Context, ns string) ([]string, error) {
	t, err := table(ns)
	if err != nil {
		return nil, err
	}
	var keys []string
	err = s.do(ctx, func(ctx context.Context) error {
		rows, err := s.pool.Query(ctx, "SELECT key FROM "+t)
		if err != nil {
			return err
		}
		keys, err = pgx.CollectRows(rows, pgx.RowTo[string])
		return err
	})
	if missingTable(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("store: postgres list %s: %w", ns, err)
	}
	// Byte order, whatever the database's collation.
	slices.Sort(keys)
	return keys, nil
}

// maxRaces bounds how often Update starts again because another process
// inserted the key first.
const maxRaces = 100

// errRaced: another process inserted the key between our read and write.
var errRaced = errors.New("store: concurrent insert")

// Update implements store.Store: the row is read FOR UPDATE, so writers of
// one key queue on its lock; a key inserted concurrently makes fn run
// again on what the other process stored.
func (s *Store) Update(ctx context.Context, ns, key string, fn func([]byte) ([]byte, error)) error {
	if err := s.ensure(ctx, ns); err != nil {
		return err
	}
	t, _ := table(ns)
	var wrote bool
	err := s.do(ctx, func(ctx context.Context) error {
		var err error
		for range maxRaces {
			err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
				wrote, err = update(ctx, tx, t, key, fn)
				return err
			})
			if !errors.Is(err, errRaced) {
				return err
			}
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("store: postgres update %s: %w", ns, err)
	}
	if !wrote {
		return nil // no counter moved: no replica has anything to apply
	}
	return s.settle(ctx, ns)
}

// update runs fn on key's value in tx and stores its result; it reports
// whether it wrote.
func update(ctx context.Context, tx pgx.Tx, t, key string, fn func([]byte) ([]byte, error)) (bool, error) {
	var old []byte
	err := tx.QueryRow(ctx, "SELECT value FROM "+t+" WHERE key = $1 FOR UPDATE", key).Scan(&old)
	found := err == nil
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return false, err
	}
	v, err := fn(old)
	if err != nil {
		return false, err
	}
	switch {
	case v == nil && found:
		_, err = tx.Exec(ctx, "DELETE FROM "+t+" WHERE key = $1", key)
	case v == nil:
		return false, nil
	case found:
		_, err = tx.Exec(ctx, "UPDATE "+t+" SET value = $2 WHERE key = $1", key, v)
	default:
		var tag pgconn.CommandTag
		tag, err = tx.Exec(ctx, "INSERT INTO "+t+" (key, value) VALUES ($1, $2) ON CONFLICT DO NOTHING", key, v)
		if err == nil && tag.RowsAffected() == 0 {
			err = errRaced
		}
	}
	return err == nil, err
}

// Insert implements store.Inserter: one statement, and a read of the
// other's value when the key was taken.
func (s *Store) Insert(ctx context.Context, ns, key string, value []byte) ([]byte, bool, error) {
	if err := s.ensure(ctx, ns); err != nil {
		return nil, false, err
	}
	t, _ := table(ns)
	var inserted bool
	err := s.do(ctx, func(ctx context.Context) error {
		tag, err := s.pool.Exec(ctx, "INSERT INTO "+t+" (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING", key, value)
		inserted = err == nil && tag.RowsAffected() == 1
		return err
	})
	if err != nil {
		return nil, false, fmt.Errorf("store: postgres insert %s: %w", ns, err)
	}
	if inserted {
		return value, true, s.settle(ctx, ns)
	}
	// A retried insert that had committed finds its own value here.
	stored, err := s.Get(ctx, ns, key)
	return stored, err == nil && bytes.Equal(stored, value), err
}

// Versions implements store.Versioner for the namespaces named at Open:
// from what the store was told while its lease holds, else from the
// database.
func (s *Store) Versions(ctx context.Context, ns ...string) ([]uint64, error) {
	for _, n := range ns {
		if !s.versioned[n] {
			return nil, fmt.Errorf("%w: %q", store.ErrUnversioned, n)
		}
	}
	if s.leases != nil {
		if vs, ok := s.leases.current(ns); ok {
			return vs, nil
		}
	}
	got := map[string]uint64{}
	err := s.do(ctx, func(ctx context.Context) error {
		rows, err := s.pool.Query(ctx, "SELECT ns, version FROM cocoon_versions WHERE ns = ANY($1)", ns)
		if err != nil {
			return err
		}
		var n string
		var v int64
		_, err = pgx.ForEachRow(rows, []any{&n, &v}, func() error {
			got[n] = uint64(v)
			return nil
		})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("store: postgres versions: %w", err)
	}
	out := make([]uint64, len(ns))
	for i, n := range ns {
		out[i] = got[n]
		if s.leases != nil {
			s.leases.apply(n, out[i])
		}
	}
	return out, nil
}

// Close implements store.Store: the lease is given up first.
func (s *Store) Close() error {
	if s.leases != nil {
		s.release()
	}
	s.pool.Close()
	return nil
}

// do runs op, again while it fails because the server cannot be reached
// (restarting, or a pooled connection it closed), for up to retryFor.
// Every operation is safe to repeat: writes are upserts, deletes and
// transactions that read before they write.
func (s *Store) do(ctx context.Context, op func(context.Context) error) error {
	deadline := time.Now().Add(retryFor)
	wait := 10 * time.Millisecond
	for {
		err := op(ctx)
		if err == nil || ctx.Err() != nil || !transient(err) || time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(wait):
		}
		wait = min(2*wait, 500*time.Millisecond)
	}
}

// transient tells errors of an unreachable or restarting server.
func transient(err error) bool {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		// connection_exception, admin_shutdown, crash_shutdown,
		// cannot_connect_now.
		return strings.HasPrefix(pe.Code, "08") || pe.Code == "57P01" || pe.Code == "57P02" || pe.Code == "57P03"
	}
	var ce *pgconn.ConnectError
	var ne net.Error
	return pgconn.SafeToRetry(err) || errors.As(err, &ce) || errors.As(err, &ne) ||
		errors.Is(err, pgconn.ErrConnClosed) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)
}
