// Package memory is a Store that lives in process memory, Trustee's
// "Memory" storage type: nothing survives a restart.
package memory

import (
	"context"
	"slices"
	"sync"

	"github.com/cocoon-cc/cocoon/store"
)

// Store keeps values in maps guarded by a lock.
type Store struct {
	mu sync.RWMutex
	ns map[string]map[string][]byte
}

// New returns an empty Store.
func New() *Store { return &Store{ns: map[string]map[string][]byte{}} }

// Get implements store.Store.
func (s *Store) Get(_ context.Context, ns, key string) ([]byte, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	v, ok := s.ns[ns][key]
	if !ok {
		return nil, store.ErrNotFound
	}
	return slices.Clone(v), nil
}

// Put implements store.Store.
func (s *Store) Put(_ context.Context, ns, key string, value []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.put(ns, key, value)
	return nil
}

func (s *Store) put(ns, key string, value []byte) {
	m, ok := s.ns[ns]
	if !ok {
		m = map[string][]byte{}
		s.ns[ns] = m
	}
	m[key] = slices.Clone(value)
}

// Delete implements store.Store.
func (s *Store) Delete(_ context.Context, ns, key string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.ns[ns], key)
	return nil
}

// List implements store.Store.
func (s *Store) List(_ context.Context, ns string) ([]string, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	keys := make([]string, 0, len(s.ns[ns]))
	for k := range s.ns[ns] {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys, nil
}

// Update implements store.Store.
func (s *Store) Update(_ context.Context, ns, key string, fn func([]byte) ([]byte, error)) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	old, ok := s.ns[ns][key]
	if ok {
		old = slices.Clone(old)
	}
	v, err := fn(old)
	if err != nil {
		return err
	}
	if v == nil {
		delete(s.ns[ns], key)
		return nil
	}
	s.put(ns, key, v)
	return nil
}

// Close implements store.Store.
func (s *Store) Close() error { return nil }
