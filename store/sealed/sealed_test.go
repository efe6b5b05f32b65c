package sealed

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/cocoon-cc/cocoon/store"
	"github.com/cocoon-cc/cocoon/store/bolt"
	"github.com/cocoon-cc/cocoon/store/memory"
	"github.com/cocoon-cc/cocoon/store/storetest"
)

func newSealed(t *testing.T, inner store.Store) *Store {
	key, err := LoadOrCreateKey(filepath.Join(t.TempDir(), "key"))
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(inner, key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store { return newSealed(t, memory.New()) })
}

func TestNoPlaintextOnDisk(t *testing.T) {
	dir := t.TempDir()
	b, err := bolt.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	s := newSealed(t, b)
	secret := []byte("correct horse battery staple")
	if err := s.Put(context.Background(), "resource", "default/key/1", secret); err != nil {
		t.Fatal(err)
	}
	s.Close()
	raw, err := os.ReadFile(filepath.Join(dir, bolt.FileName))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(raw, secret) {
		t.Fatal("the secret is in the database file in the clear")
	}
}

func TestMovedValueDoesNotOpen(t *testing.T) {
	ctx := context.Background()
	inner := memory.New()
	s := newSealed(t, inner)
	if err := s.Put(ctx, "ns", "a", []byte("v")); err != nil {
		t.Fatal(err)
	}
	v, _ := inner.Get(ctx, "ns", "a")
	inner.Put(ctx, "ns", "b", v)
	if _, err := s.Get(ctx, "ns", "b"); !errors.Is(err, ErrTampered) {
		t.Fatalf("moved value: %v, want ErrTampered", err)
	}
}

func TestKeyReloads(t *testing.T) {
	path := filepath.Join(t.TempDir(), "key")
	k1, err := LoadOrCreateKey(path)
	if err != nil {
		t.Fatal(err)
	}
	k2, err := LoadOrCreateKey(path)
	if err != nil || !bytes.Equal(k1, k2) {
		t.Fatalf("reloaded key differs: %v", err)
	}
	os.WriteFile(path, []byte("short"), 0o600)
	if _, err := LoadOrCreateKey(path); err == nil {
		t.Fatal("a short key file was accepted")
	}
}
