// Package bolt is the embedded durable Store: a bbolt database in a data
// directory. Every acknowledged write has been fsynced. Writes go through
// one committer that applies everything queued while the previous commit
// was syncing in the next transaction (group commit): a lone writer waits
// for one commit, many writers share them.
package bolt

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	bbolt "go.etcd.io/bbolt"

	"github.com/cocoon-cc/cocoon/store"
)

// FileName is the database file inside the data directory.
const FileName = "kbs.db"

// maxGroup bounds the writes one commit carries.
const maxGroup = 256

// Store is a bbolt-backed store.Store; namespaces are buckets.
type Store struct {
	db     *bbolt.DB
	writes chan *write
	done   chan struct{}

	mu     sync.RWMutex // guards closed against sends on a closed writes
	closed bool
}

// ErrClosed is returned for a write to a closed store.
var ErrClosed = errors.New("store: closed")

// write is one queued Update.
type write struct {
	ns, key string
	fn      func([]byte) ([]byte, error)
	err     chan error
}

// Open opens (creating if needed) the database in dir.
func Open(dir string) (*Store, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("store: create %s: %w", dir, err)
	}
	// As etcd: the free list is rebuilt on open rather than written by
	// every commit (fewer pages to sync per write), kept as a map.
	db, err := bbolt.Open(filepath.Join(dir, FileName), 0o600, &bbolt.Options{Timeout: 5 * time.Second,
		NoFreelistSync: true, FreelistType: bbolt.FreelistMapType})
	if err != nil {
		return nil, fmt.Errorf("store: open %s: %w", dir, err)
	}
	s := &Store{db: db, writes: make(chan *write, maxGroup), done: make(chan struct{})}
	go s.commit()
	return s, nil
}

// commit runs the group commits until Close.
func (s *Store) commit() {
	defer close(s.done)
	for w := range s.writes {
		group := []*write{w}
	drain:
		for len(group) < maxGroup {
			select {
			case w, ok := <-s.writes:
				if !ok {
					break drain
				}
				group = append(group, w)
			default:
				break drain
			}
		}
		s.apply(group)
	}
}

// apply runs a group in one transaction. A write whose fn fails changes
// nothing and gets its error; the others still commit.
func (s *Store) apply(group []*write) {
	errs := make([]error, len(group))
	err := s.db.Update(func(tx *bbolt.Tx) error {
		for i, w := range group {
			errs[i] = applyOne(tx, w)
		}
		return nil
	})
	for i, w := range group {
		if err != nil {
			errs[i] = fmt.Errorf("store: commit: %w", err)
		}
		w.err <- errs[i]
	}
}

func applyOne(tx *bbolt.Tx, w *write) error {
	b := tx.Bucket([]byte(w.ns))
	var old []byte
	if b != nil {
		old = slices.Clone(b.Get([]byte(w.key)))
	}
	v, err := w.fn(old)
	if err != nil {
		return err
	}
	if b == nil {
		if v == nil {
			return nil
		}
		if b, err = tx.CreateBucket([]byte(w.ns)); err != nil {
			return err
		}
	}
	if v == nil {
		return b.Delete([]byte(w.key))
	}
	return b.Put([]byte(w.key), v)
}

// Get implements store.Store.
func (s *Store) Get(_ context.Context, ns, key string) ([]byte, error) {
	var out []byte
	err := s.db.View(func(tx *bbolt.Tx) error {
		b := tx.Bucket([]byte(ns))
		if b == nil {
			return store.ErrNotFound
		}
		v := b.Get([]byte(key))
		if v == nil {
			return store.ErrNotFound
		}
		out = slices.Clone(v)
		return nil
	})
	return out, err
}

// Put implements store.Store.
func (s *Store) Put(ctx context.Context, ns, key string, value []byte) error {
	return s.Update(ctx, ns, key, func([]byte) ([]byte, error) { return value, nil })
}

// Delete implements store.Store.
func (s *Store) Delete(ctx context.Context, ns, key string) error {
	return s.Update(ctx, ns, key, func([]byte) ([]byte, error) { return nil, nil })
}

// List implements store.Store.
func (s *Store) List(_ context.Context, ns string) ([]string, error) {
	var keys []string
	err := s.db.View(func(tx *bbolt.Tx) error {
		b := tx.Bucket([]byte(ns))
		if b == nil {
			return nil
		}
		return b.ForEach(func(k, _ []byte) error {
			keys = append(keys, string(k))
			return nil
		})
	})
	return keys, err
}

// Update implements store.Store; it returns once the write is durable.
func (s *Store) Update(ctx context.Context, ns, key string, fn func([]byte) ([]byte, error)) error {
	w := &write{ns: ns, key: key, fn: fn, err: make(chan error, 1)}
	s.mu.RLock()
	if s.closed {
		s.mu.RUnlock()
		return ErrClosed
	}
	select {
	case s.writes <- w:
		s.mu.RUnlock()
	case <-ctx.Done():
		s.mu.RUnlock()
		return ctx.Err()
	}
	// Once queued the write will be applied: wait for the outcome even if
	// ctx ends, so the caller never reports a write that then happens.
	return <-w.err
}

// Close implements store.Store: queued writes commit first.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrClosed
	}
	s.closed = true
	close(s.writes)
	s.mu.Unlock()
	<-s.done
	return s.db.Close()
}
