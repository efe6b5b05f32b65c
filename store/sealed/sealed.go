// Package sealed encrypts every value of a Store with AES-256-GCM, so the
// database file holds no secret in the clear. The namespace and key are the
// additional data: a value moved to another key no longer opens.
package sealed

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/cocoon-cc/cocoon/store"
)

// KeySize is the length of the sealing key.
const KeySize = 32

// ErrTampered is returned when a stored value does not open with the key.
var ErrTampered = errors.New("store: sealed value does not open (wrong key or tampered database)")

// Store seals the values of the Store it wraps.
type Store struct {
	inner store.Store
	aead  cipher.AEAD
}

// New wraps inner with a sealing key of KeySize bytes.
func New(inner store.Store, key []byte) (*Store, error) {
	if len(key) != KeySize {
		return nil, fmt.Errorf("store: sealing key must be %d bytes, got %d", KeySize, len(key))
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	return &Store{inner: inner, aead: aead}, nil
}

// LoadKey reads the sealing key at path.
func LoadKey(path string) ([]byte, error) {
	key, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("store: read sealing key: %w", err)
	}
	if len(key) != KeySize {
		return nil, fmt.Errorf("store: sealing key %s has %d bytes, want %d", path, len(key), KeySize)
	}
	return key, nil
}

// LoadOrCreateKey reads the sealing key at path, creating it (mode 0600)
// when it does not exist yet.
func LoadOrCreateKey(path string) ([]byte, error) {
	key, err := LoadKey(path)
	if !errors.Is(err, os.ErrNotExist) {
		return key, err
	}
	key = make([]byte, KeySize)
	rand.Read(key)
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("store: sealing key directory: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("store: create sealing key: %w", err)
	}
	if _, err := f.Write(key); err != nil {
		f.Close()
		return nil, fmt.Errorf("store: write sealing key: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return nil, fmt.Errorf("store: sync sealing key: %w", err)
	}
	return key, f.Close()
}

func ad(ns, key string) []byte { return []byte(ns + "\x00" + key) }

func (s *Store) seal(ns, key string, v []byte) []byte {
	nonce := make([]byte, s.aead.NonceSize(), s.aead.NonceSize()+len(v)+s.aead.Overhead())
	rand.Read(nonce)
	return s.aead.Seal(nonce, nonce, v, ad(ns, key))
}

func (s *Store) open(ns, key string, v []byte) ([]byte, error) {
	n := s.aead.NonceSize()
	if len(v) < n+s.aead.Overhead() {
		return nil, ErrTampered
	}
	out, err := s.aead.Open(nil, v[:n], v[n:], ad(ns, key))
	if err != nil {
		return nil, ErrTampered
	}
	return out, nil
}

// Verify makes sure the values of the store were sealed with this key: it
// opens a marker kept under ns/key, storing one first when there is none.
// Processes sharing a database but given different keys thus fail when
// they start, not at the first secret they read.
func (s *Store) Verify(ctx context.Context, ns, key string) error {
	marker := make([]byte, 16)
	rand.Read(marker)
	err := s.Update(ctx, ns, key, func(old []byte) ([]byte, error) {
		if old != nil {
			return old, nil
		}
		return marker, nil
	})
	if errors.Is(err, ErrTampered) {
		return fmt.Errorf("store: the database was sealed with another sealing key: %w", err)
	}
	return err
}

// Get implements store.Store.
func (s *Store) Get(ctx context.Context, ns, key string) ([]byte, error) {
	v, err := s.inner.Get(ctx, ns, key)
	if err != nil {
		return nil, err
	}
	return s.open(ns, key, v)
}

// Put implements store.Store.
func (s *Store) Put(ctx context.Context, ns, key string, value []byte) error {
	return s.inner.Put(ctx, ns, key, s.seal(ns, key, value))
}

// Delete implements store.Store.
func (s *Store) Delete(ctx context.Context, ns, key string) error {
	return s.inner.Delete(ctx, ns, key)
}

// List implements store.Store.
func (s *Store) List(ctx context.Context, ns string) ([]string, error) {
	return s.inner.List(ctx, ns)
}

// Update implements store.Store.
func (s *Store) Update(ctx context.Context, ns, key string, fn func([]byte) ([]byte, error)) error {
	return s.inner.Update(ctx, ns, key, func(old []byte) ([]byte, error) {
		if old != nil {
			var err error
			if old, err = s.open(ns, key, old); err != nil {
				return nil, err
			}
		}
		v, err := fn(old)
		if err != nil || v == nil {
			return v, err
		}
		return s.seal(ns, key, v), nil
	})
}

// Insert implements store.Inserter.
func (s *Store) Insert(ctx context.Context, ns, key string, value []byte) ([]byte, bool, error) {
	stored, inserted, err := store.Insert(ctx, s.inner, ns, key, s.seal(ns, key, value))
	if err != nil || inserted {
		return value, inserted, err
	}
	v, err := s.open(ns, key, stored)
	return v, false, err
}

// Versions implements store.Versioner when the wrapped store does:
// counters are not secret.
func (s *Store) Versions(ctx context.Context, ns ...string) ([]uint64, error) {
	return store.Versions(ctx, s.inner, ns...)
}

// Close implements store.Store.
func (s *Store) Close() error { return s.inner.Close() }
