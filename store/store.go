// Package store is the durable key-value store behind the KBS: sessions,
// resources, policies, reference values and keys all live in it, each kind
// in its own namespace.
package store

import (
	"context"
	"errors"
)

// ErrNotFound is returned for a key that does not exist.
var ErrNotFound = errors.New("not found")

// Store is a namespaced key-value store. A nil error from a write means the
// write is durable.
type Store interface {
	Get(ctx context.Context, ns, key string) ([]byte, error)
	Put(ctx context.Context, ns, key string, value []byte) error
	Delete(ctx context.Context, ns, key string) error
	// List returns the keys of ns in lexical order.
	List(ctx context.Context, ns string) ([]string, error)
	// Update reads key (nil when missing), calls fn and stores its result
	// atomically; fn returning nil deletes the key, returning an error
	// aborts the update with that error. fn may be called more than once
	// (a shared store retries when another process raced it).
	Update(ctx context.Context, ns, key string, fn func(old []byte) ([]byte, error)) error
	Close() error
}

// ErrUnversioned is returned by Versions of a store that keeps no version
// counters: this process is its only writer, so what it caches stays true.
var ErrUnversioned = errors.New("store: no version counters (not shared)")

// Versioner is a Store that other processes write too (KBS replicas on one
// database). Versions reads, in at most one round trip, a counter per
// namespace that every committed write to it increments, whoever wrote: a
// cache of a namespace read before the counter moved may be stale. Every
// write acknowledged before the call is counted.
type Versioner interface {
	Versions(ctx context.Context, ns ...string) ([]uint64, error)
}

// Versions asks s for the counters of ns; ErrUnversioned when s keeps none.
func Versions(ctx context.Context, s Store, ns ...string) ([]uint64, error) {
	v, ok := s.(Versioner)
	if !ok {
		return nil, ErrUnversioned
	}
	return v.Versions(ctx, ns...)
}

// Inserter is a Store that can store a value where none is in one step (a
// round trip for a remote store), cheaper than Update.
type Inserter interface {
	// Insert stores value unless key holds one; it returns the value
	// key holds afterwards and whether it is value.
	Insert(ctx context.Context, ns, key string, value []byte) (stored []byte, inserted bool, err error)
}

// Insert stores value at key unless it holds one, with s's Insert when it
// has one, else with Update.
func Insert(ctx context.Context, s Store, ns, key string, value []byte) (stored []byte, inserted bool, err error) {
	if i, ok := s.(Inserter); ok {
		return i.Insert(ctx, ns, key, value)
	}
	err = s.Update(ctx, ns, key, func(old []byte) ([]byte, error) {
		stored, inserted = old, old == nil
		if inserted {
			stored = value
		}
		return stored, nil
	})
	return stored, inserted, err
}
