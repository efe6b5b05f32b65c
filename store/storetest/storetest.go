// Package storetest is the conformance suite every store.Store passes.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"

	"github.com/cocoon-cc/cocoon/store"
)

// Run checks the store.Store contract on stores made by open.
func Run(t *testing.T, open func(t *testing.T) store.Store) {
	ctx := context.Background()
	t.Run("GetMissing", func(t *testing.T) {
		s := open(t)
		if _, err := s.Get(ctx, "ns", "k"); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("Get of a missing key: %v, want ErrNotFound", err)
		}
	})
	t.Run("PutGetDeleteList", func(t *testing.T) {
		s := open(t)
		for _, k := range []string{"b", "a", "c"} {
			if err := s.Put(ctx, "ns", k, []byte("v-"+k)); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.Put(ctx, "other", "z", []byte("z")); err != nil {
			t.Fatal(err)
		}
		v, err := s.Get(ctx, "ns", "a")
		if err != nil || string(v) != "v-a" {
			t.Fatalf("Get = %q, %v", v, err)
		}
		keys, err := s.List(ctx, "ns")
		if err != nil || !slices.Equal(keys, []string{"a", "b", "c"}) {
			t.Fatalf("List = %v, %v", keys, err)
		}
		if err := s.Delete(ctx, "ns", "b"); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Get(ctx, "ns", "b"); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("Get after Delete: %v", err)
		}
		if err := s.Delete(ctx, "ns", "missing"); err != nil {
			t.Fatalf("Delete of a missing key: %v", err)
		}
	})
	t.Run("UpdateAbortChangesNothing", func(t *testing.T) {
		s := open(t)
		if err := s.Put(ctx, "ns", "k", []byte("old")); err != nil {
			t.Fatal(err)
		}
		boom := errors.New("boom")
		err := s.Update(ctx, "ns", "k", func(old []byte) ([]byte, error) { return []byte("new"), boom })
		if !errors.Is(err, boom) {
			t.Fatalf("Update error = %v", err)
		}
		if v, _ := s.Get(ctx, "ns", "k"); string(v) != "old" {
			t.Fatalf("aborted Update changed the value to %q", v)
		}
	})
	t.Run("InsertKeepsTheFirst", func(t *testing.T) {
		s := open(t)
		for i, want := range []bool{true, false} {
			stored, inserted, err := store.Insert(ctx, s, "ns", "k", []byte(fmt.Sprint("v", i)))
			if err != nil || inserted != want || string(stored) != "v0" {
				t.Fatalf("Insert %d = %q, %v, %v", i, stored, inserted, err)
			}
		}
	})
	t.Run("ConcurrentUpdatesAreAtomic", func(t *testing.T) {
		Increments(t, open(t))
	})
}

// Increments counts to 50 with concurrent Updates spread over stores (one
// store, or clients of one shared store) and checks none was lost.
func Increments(t *testing.T, stores ...store.Store) {
	ctx := context.Background()
	const n = 50
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := stores[i%len(stores)].Update(ctx, "ns", "counter", func(old []byte) ([]byte, error) {
				var c int
				if old != nil {
					fmt.Sscan(string(old), &c)
				}
				return []byte(fmt.Sprint(c + 1)), nil
			})
			if err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if v, _ := stores[0].Get(ctx, "ns", "counter"); string(v) != fmt.Sprint(n) {
		t.Fatalf("counter = %s, want %d", v, n)
	}
}
