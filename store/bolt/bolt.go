// Package bolt is the embedded durable Store: a bbolt database in a data
// directory. Every acknowledged write has been fsynced; concurrent writers
// share one commit (bbolt's batch) so durability does not serialize them.
package bolt

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"

	bbolt "go.etcd.io/bbolt"

	"github.com/cocoon-cc/cocoon/store"
)

// FileName is the database file inside the data directory.
const FileName = "kbs.db"

// Store is a bbolt-backed store.Store; namespaces are buckets.
type Store struct {
	db *bbolt.DB
}

// Open opens (creating if needed) the database in dir.
func Open(dir string) (*Store, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("store: create %s: %w", dir, err)
	}
	db, err := bbolt.Open(filepath.Join(dir, FileName), 0o600, &bbolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("store: open %s: %w", dir, err)
	}
	// Concurrent writers share a commit (two fsyncs); a short window keeps
	// a lone writer's latency low.
	db.MaxBatchDelay = 200 * time.Microsecond
	return &Store{db: db}, nil
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

// Update implements store.Store. It runs in a batch: fn may be called more
// than once if another write in the same batch fails, so fn must be free of
// side effects other than its result.
func (s *Store) Update(_ context.Context, ns, key string, fn func([]byte) ([]byte, error)) error {
	return s.db.Batch(func(tx *bbolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists([]byte(ns))
		if err != nil {
			return err
		}
		old := b.Get([]byte(key))
		if old != nil {
			old = slices.Clone(old)
		}
		v, err := fn(old)
		if err != nil {
			return err
		}
		if v == nil {
			return b.Delete([]byte(key))
		}
		return b.Put([]byte(key), v)
	})
}

// Close implements store.Store.
func (s *Store) Close() error { return s.db.Close() }
