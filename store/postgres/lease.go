package postgres

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Replicas sharing a database keep what they cache of the versioned
// namespaces current without asking the database on every read:
//
//   - Each store holds a lease, a row of cocoon_replicas, renewed over a
//     connection that LISTENs to the version counters (the trigger
//     notifies every bump on channelVersions).
//   - A store applies each counter it is told, then acknowledges it on
//     channelAcks.
//   - A write returns only once every replica holding a lease has
//     acknowledged the counter as it stands after the write, or that
//     replica's lease has run out (settle).
//
// So while its lease holds, the counters a store was told count every
// acknowledged write, and Versions and the cached Gets answer without a
// round trip. Without a lease (the connection lost, the database away)
// they ask the database, as a store without leases always does. The
// lease ends locally before it ends in the database: it is counted from
// before the renewal was sent.
const (
	channelVersions = "cocoon_versions"
	channelAcks     = "cocoon_acks"
)

// DefaultLease is how long a replica's lease lasts unless Options.Lease
// says otherwise: the longest a write waits for a replica that stopped
// answering (killed, cut off) before it is acknowledged.
const DefaultLease = 3 * time.Second

// firstLease bounds how long Open waits for the first lease.
const firstLease = 5 * time.Second

// maxCached bounds the bytes of values a store caches.
const maxCached = 64 << 20

// leases is a store's side of the protocol: its lease, the counters it
// applied, the acknowledgements it heard and its cache.
type leases struct {
	id    string
	lease time.Duration
	log   *slog.Logger

	mu    sync.Mutex
	until time.Time         // local end of the lease; zero without one
	seen  map[string]uint64 // the counters applied
	acks  map[string]*acked // by replica
	heard chan struct{}     // closed and replaced on every acknowledgement
	cache map[string]*cached
	size  int

	first     chan struct{} // closed when the first lease is held
	firstOnce sync.Once
	stop      func()
	done      chan struct{}
}

// acked are the counters a replica acknowledged, and when it last did.
type acked struct {
	at      time.Time
	counter map[string]uint64
}

// cached are the values of a namespace read while its counter was version.
type cached struct {
	version uint64
	values  map[string][]byte
}

func newLeases(lease time.Duration, log *slog.Logger) *leases {
	id := make([]byte, 16)
	rand.Read(id)
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &leases{id: hex.EncodeToString(id), lease: lease, log: log, seen: map[string]uint64{},
		acks: map[string]*acked{}, heard: make(chan struct{}), cache: map[string]*cached{}, first: make(chan struct{}), done: make(chan struct{})}
}

// current returns the counters of ns while the lease holds.
func (l *leases) current(ns []string) ([]uint64, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !time.Now().Before(l.until) {
		return nil, false
	}
	vs := make([]uint64, len(ns))
	for i, n := range ns {
		vs[i] = l.seen[n]
	}
	return vs, true
}

// apply records the counter v of ns (counters only grow).
func (l *leases) apply(ns string, v uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if v > l.seen[ns] {
		l.seen[ns] = v
	}
}

// get returns a cached value of key in ns while the lease holds, and the
// counter to cache a value read now under.
func (l *leases) get(ns, key string) (value []byte, version uint64, ok, leased bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !time.Now().Before(l.until) {
		return nil, 0, false, false
	}
	v := l.seen[ns]
	if c := l.cache[ns]; c != nil && c.version == v {
		value, ok = c.values[key]
	}
	return value, v, ok, true
}

// keep caches value of key in ns, read while its counter was version. A
// value read after the counter moved on is newer than version says: it
// is dropped with the rest at the next move.
func (l *leases) keep(ns, key string, version uint64, value []byte) {
	l.mu.Lock()
	defer l.mu.Unlock()
	c := l.cache[ns]
	if c != nil && c.version > version {
		return // read before a move the cache has seen
	}
	if c == nil || c.version != version {
		if c != nil {
			for _, v := range c.values {
				l.size -= len(v)
			}
		}
		c = &cached{version: version, values: map[string][]byte{}}
		l.cache[ns] = c
	}
	if _, ok := c.values[key]; ok || l.size+len(value) > maxCached {
		return
	}
	c.values[key] = value
	l.size += len(value)
}

// hold sets the lease's local end.
func (l *leases) hold(until time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.until = until
}

// drop ends the lease; it reports whether there was one.
func (l *leases) drop() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	held := !l.until.IsZero()
	l.until = time.Time{}
	return held
}

// heardAck records that replica applied counter v of ns. A replica not
// heard from for a while is forgotten: a write waits only for what is
// acknowledged after it.
func (l *leases) heardAck(replica, ns string, v uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	a := l.acks[replica]
	if a == nil {
		for id, old := range l.acks {
			if now.Sub(old.at) > 10*l.lease {
				delete(l.acks, id)
			}
		}
		a = &acked{counter: map[string]uint64{}}
		l.acks[replica] = a
	}
	a.at = now
	a.counter[ns] = max(a.counter[ns], v)
	close(l.heard)
	l.heard = make(chan struct{})
}

// waiting returns how many replicas of live (id -> local end of its
// lease) have not acknowledged counter v of ns while their lease lasts,
// the earliest end among them, and a channel closed at the next
// acknowledgement.
func (l *leases) waiting(ns string, v uint64, live map[string]time.Time) (n int, first time.Time, next <-chan struct{}) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	for id, end := range live {
		if a := l.acks[id]; (a != nil && a.counter[ns] >= v) || !now.Before(end) {
			continue
		}
		if n++; first.IsZero() || end.Before(first) {
			first = end
		}
	}
	return n, first, l.heard
}

// listen keeps the lease: it holds one over a listening connection until
// the connection fails, then takes one again, until stopped.
func (s *Store) listen(ctx context.Context) {
	defer close(s.leases.done)
	const first = 10 * time.Millisecond
	wait := first
	for {
		err := s.holdLease(ctx)
		if s.leases.drop() {
			wait = first // it was held: try again at once
		}
		if ctx.Err() != nil {
			return
		}
		s.leases.log.Warn("store: postgres: no lease; reading version counters from the database until there is one", "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		wait = min(2*wait, 2*time.Second)
	}
}

// holdLease listens, takes the lease, acknowledges the counters as they
// stand, then applies and acknowledges every counter it is told and
// renews the lease, until the connection fails.
func (s *Store) holdLease(ctx context.Context) error {
	cfg := s.connConfig.Copy()
	// Named, so that an operator can tell the lease's connection.
	cfg.RuntimeParams["application_name"] = "cocoon-lease-" + s.leases.id
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, "LISTEN "+channelVersions+"; LISTEN "+channelAcks); err != nil {
		return err
	}
	l := s.leases
	renewed, err := s.renew(ctx, conn)
	if err != nil {
		return err
	}
	// Counters bumped before LISTEN were never told: read them all.
	rows, _ := conn.Query(ctx, "SELECT ns, version FROM cocoon_versions")
	var ns string
	var v int64
	var all []string
	if _, err := pgx.ForEachRow(rows, []any{&ns, &v}, func() error {
		l.apply(ns, uint64(v))
		all = append(all, l.id+" "+ns+" "+strconv.FormatInt(v, 10))
		return nil
	}); err != nil {
		return err
	}
	if _, err := conn.Exec(ctx, "SELECT pg_notify('"+channelAcks+"', p) FROM unnest($1::text[]) p", all); err != nil {
		return err
	}
	if err := s.extend(ctx, conn, renewed); err != nil {
		return err
	}
	l.log.Info("store: postgres: lease held", "replica", l.id)
	for {
		if time.Since(renewed) >= l.lease/4 {
			if renewed, err = s.renew(ctx, conn); err != nil {
				return err
			}
			if err := s.extend(ctx, conn, renewed); err != nil {
				return err
			}
		}
		wctx, cancel := context.WithDeadline(ctx, renewed.Add(l.lease/4))
		n, err := conn.WaitForNotification(wctx)
		cancel()
		if pgconn.Timeout(err) && ctx.Err() == nil {
			continue
		}
		if err != nil {
			return err
		}
		if err := s.told(ctx, conn, n); err != nil {
			return err
		}
	}
}

// renew extends the lease in the database, and deletes the rows of
// replicas long gone (killed); it returns when the renewal was sent, which
// the local end of the lease counts from.
func (s *Store) renew(ctx context.Context, conn *pgx.Conn) (time.Time, error) {
	sent := time.Now()
	_, err := conn.Exec(ctx, `WITH gone AS (DELETE FROM cocoon_replicas WHERE lease_until < now() - interval '1 hour')
		INSERT INTO cocoon_replicas (id, lease_until) VALUES ($1, now() + make_interval(secs => $2))
		ON CONFLICT (id) DO UPDATE SET lease_until = EXCLUDED.lease_until`, s.leases.id, s.leases.lease.Seconds())
	return sent, err
}

// extend applies the counters told before the lease was renewed at sent,
// then holds the lease until sent plus most of its length. PostgreSQL
// sends a listener the notifications committed before a transaction of its
// ends with that transaction's answer, so they are all in hand: a writer
// that waited for the lease before this renewal to run out may count on
// them being applied.
func (s *Store) extend(ctx context.Context, conn *pgx.Conn, sent time.Time) error {
	inHand, cancel := context.WithCancel(ctx)
	cancel() // only what was received already
	for {
		n, _ := conn.WaitForNotification(inHand)
		if n == nil {
			break
		}
		if err := s.told(ctx, conn, n); err != nil {
			return err
		}
	}
	s.leases.hold(sent.Add(s.leases.lease - s.leases.lease/10))
	s.leases.firstOnce.Do(func() { close(s.leases.first) })
	return nil
}

// told applies a notification: a counter, acknowledged once applied, or
// another replica's acknowledgement.
func (s *Store) told(ctx context.Context, conn *pgx.Conn, n *pgconn.Notification) error {
	l := s.leases
	switch n.Channel {
	case channelVersions:
		ns, v, ok := parseCounter(n.Payload)
		if !ok {
			return nil
		}
		l.apply(ns, v)
		_, err := conn.Exec(ctx, "SELECT pg_notify('"+channelAcks+"', $1)", l.id+" "+n.Payload)
		return err
	case channelAcks:
		replica, counter, _ := strings.Cut(n.Payload, " ")
		if ns, v, ok := parseCounter(counter); ok {
			l.heardAck(replica, ns, v)
		}
	}
	return nil
}

// parseCounter reads "namespace counter".
func parseCounter(p string) (string, uint64, bool) {
	ns, v, ok := strings.Cut(p, " ")
	n, err := strconv.ParseUint(v, 10, 64)
	return ns, n, ok && err == nil
}

// settle returns once every replica holding a lease has applied the
// counter of ns as it stands after a write this store committed, or its
// lease has run out. This store applies it itself.
func (s *Store) settle(ctx context.Context, ns string) error {
	if !s.versioned[ns] {
		return nil
	}
	l := s.leases
	var v int64
	var ids []string
	var left []float64
	err := s.do(ctx, func(ctx context.Context) error {
		return s.pool.QueryRow(ctx, `SELECT (SELECT version FROM cocoon_versions WHERE ns = $1),
			coalesce(array_agg(id), '{}'), coalesce(array_agg(extract(epoch FROM lease_until - now())::float8), '{}')
			FROM cocoon_replicas WHERE lease_until > now()`, ns).Scan(&v, &ids, &left)
	})
	if err != nil {
		return fmt.Errorf("store: postgres: %s written; its replicas: %w", ns, err)
	}
	l.apply(ns, uint64(v))
	now := time.Now()
	live := make(map[string]time.Time, len(ids))
	for i, id := range ids {
		if id != l.id {
			// A margin for clocks that run apart.
			live[id] = now.Add(time.Duration(left[i]*float64(time.Second)) + l.lease/10)
		}
	}
	for {
		n, first, next := l.waiting(ns, uint64(v), live)
		if n == 0 {
			return nil
		}
		select {
		case <-next:
		case <-time.After(time.Until(first)):
		case <-ctx.Done():
			return fmt.Errorf("store: postgres: %s written, but %d replicas have not seen it yet: %w", ns, n, ctx.Err())
		}
	}
}

// release gives the lease up, so that writes no longer wait for this
// store.
func (s *Store) release() {
	s.leases.stop()
	<-s.leases.done
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if _, err := s.pool.Exec(ctx, "DELETE FROM cocoon_replicas WHERE id = $1", s.leases.id); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		s.leases.log.Warn("store: postgres: lease not given up; writes wait for it to run out", "err", err)
	}
}
