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
	// aborts the update with that error.
	Update(ctx context.Context, ns, key string, fn func(old []byte) ([]byte, error)) error
	Close() error
}
