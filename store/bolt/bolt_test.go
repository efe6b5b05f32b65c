package bolt

import (
	"context"
	"testing"

	"github.com/cocoon-cc/cocoon/store"
	"github.com/cocoon-cc/cocoon/store/storetest"
)

func open(t *testing.T, dir string) *Store {
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		s := open(t, t.TempDir())
		t.Cleanup(func() { s.Close() })
		return s
	})
}

func TestWritesSurviveReopen(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	s := open(t, dir)
	if err := s.Put(ctx, "ns", "k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s = open(t, dir)
	defer s.Close()
	if v, err := s.Get(ctx, "ns", "k"); err != nil || string(v) != "v" {
		t.Fatalf("after reopen: %q, %v", v, err)
	}
}
