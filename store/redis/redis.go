// Package redis is a Store in Redis, for the RCAR sessions KBS replicas
// share (Trustee's session_storage_type = "Redis"). As in Trustee, a value
// is the Redis string "<namespace>:<key>". A write is as durable as the
// server's appendfsync makes it.
package redis

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	goredis "github.com/redis/go-redis/v9"

	"github.com/cocoon-cc/cocoon/store"
)

// maxRaces bounds how often Update starts again because the key changed
// under it.
const maxRaces = 100

// Store is a store.Store over a go-redis client, which reconnects by
// itself.
type Store struct {
	c *goredis.Client
}

// Open connects to the server of a redis:// or rediss:// URL.
func Open(ctx context.Context, url string) (*Store, error) {
	opts, err := goredis.ParseURL(url)
	if err != nil {
		// The URL may carry a password: do not quote it.
		return nil, errors.New("store: redis URL does not parse")
	}
	c := goredis.NewClient(opts)
	if err := c.Ping(ctx).Err(); err != nil {
		c.Close()
		return nil, fmt.Errorf("store: redis: %w", err)
	}
	return &Store{c: c}, nil
}

func name(ns, key string) string { return ns + ":" + key }

// Get implements store.Store.
func (s *Store) Get(ctx context.Context, ns, key string) ([]byte, error) {
	v, err := s.c.Get(ctx, name(ns, key)).Bytes()
	if errors.Is(err, goredis.Nil) {
		return nil, store.ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("store: redis get %s: %w", ns, err)
	}
	return v, nil
}

// Put implements store.Store.
func (s *Store) Put(ctx context.Context, ns, key string, value []byte) error {
	if err := s.c.Set(ctx, name(ns, key), value, 0).Err(); err != nil {
		return fmt.Errorf("store: redis put %s: %w", ns, err)
	}
	return nil
}

// Delete implements store.Store.
func (s *Store) Delete(ctx context.Context, ns, key string) error {
	if err := s.c.Del(ctx, name(ns, key)).Err(); err != nil {
		return fmt.Errorf("store: redis delete %s: %w", ns, err)
	}
	return nil
}

// globEscaper quotes what SCAN's MATCH pattern would read as a wildcard.
var globEscaper = strings.NewReplacer(`\`, `\\`, `*`, `\*`, `?`, `\?`, `[`, `\[`, `]`, `\]`)

// List implements store.Store with SCAN, which does not block the server
// as KEYS would.
func (s *Store) List(ctx context.Context, ns string) ([]string, error) {
	prefix := ns + ":"
	var keys []string
	it := s.c.Scan(ctx, 0, globEscaper.Replace(prefix)+"*", 1000).Iterator()
	for it.Next(ctx) {
		keys = append(keys, strings.TrimPrefix(it.Val(), prefix))
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("store: redis list %s: %w", ns, err)
	}
	// SCAN may return a key twice.
	slices.Sort(keys)
	return slices.Compact(keys), nil
}

// Update implements store.Store with WATCH and MULTI: the write happens
// only if no one changed the key since it was read, else fn runs again.
func (s *Store) Update(ctx context.Context, ns, key string, fn func([]byte) ([]byte, error)) error {
	k := name(ns, key)
	txf := func(tx *goredis.Tx) error {
		old, err := tx.Get(ctx, k).Bytes()
		if errors.Is(err, goredis.Nil) {
			old, err = nil, nil
		}
		if err != nil {
			return err
		}
		v, err := fn(old)
		if err != nil {
			return err
		}
		_, err = tx.TxPipelined(ctx, func(p goredis.Pipeliner) error {
			if v == nil {
				p.Del(ctx, k)
			} else {
				p.Set(ctx, k, v, 0)
			}
			return nil
		})
		return err
	}
	for range maxRaces {
		err := s.c.Watch(ctx, txf, k)
		if errors.Is(err, goredis.TxFailedErr) {
			continue
		}
		if err != nil {
			return fmt.Errorf("store: redis update %s: %w", ns, err)
		}
		return nil
	}
	return fmt.Errorf("store: redis update %s: key kept changing", ns)
}

// Close implements store.Store.
func (s *Store) Close() error { return s.c.Close() }
