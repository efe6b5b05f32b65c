package bolt

import (
	"context"
	"errors"
	"fmt"
	"sync"
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

func TestWriteAfterCloseIsAnError(t *testing.T) {
	s := open(t, t.TempDir())
	s.Close()
	if err := s.Put(context.Background(), "ns", "k", []byte("v")); !errors.Is(err, ErrClosed) {
		t.Fatalf("Put after Close: %v", err)
	}
}

// TestGroupCommitKeepsEveryWrite runs many writers at once: every write
// acknowledged is there after a reopen.
func TestGroupCommitKeepsEveryWrite(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	ctx := context.Background()
	var wg sync.WaitGroup
	for i := range 200 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.Put(ctx, "ns", fmt.Sprint(i), []byte{byte(i)}); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	s.Close()
	s = open(t, dir)
	defer s.Close()
	keys, _ := s.List(ctx, "ns")
	if len(keys) != 200 {
		t.Fatalf("%d keys after reopen, want 200", len(keys))
	}
}
