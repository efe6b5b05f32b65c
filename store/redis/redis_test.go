package redis

import (
	"context"
	"fmt"
	"slices"
	"testing"

	goredis "github.com/redis/go-redis/v9"

	"github.com/cocoon-cc/cocoon/internal/testutil/dbtest"
	"github.com/cocoon-cc/cocoon/store"
	"github.com/cocoon-cc/cocoon/store/storetest"
)

func TestRedis(t *testing.T) {
	srv := dbtest.StartRedis(t)
	ctx := context.Background()
	db := 0
	open := func(t *testing.T, url string) *Store {
		s, err := Open(ctx, url)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	// Each conformance run gets a database of its own (0..15).
	fresh := func() string {
		db++
		return fmt.Sprintf("%s/%d", srv.URL(), db)
	}
	t.Run("Conformance", func(t *testing.T) {
		storetest.Run(t, func(t *testing.T) store.Store { return open(t, fresh()) })
	})
	t.Run("TwoClientsUpdateOneKey", func(t *testing.T) {
		url := fresh()
		storetest.Increments(t, open(t, url), open(t, url))
	})
	t.Run("TrusteeKeysAndGlobCharacters", func(t *testing.T) {
		url := fresh()
		s := open(t, url)
		s.Put(ctx, "a*", "k", []byte("1"))
		s.Put(ctx, "ab", "k", []byte("2"))
		if keys, err := s.List(ctx, "a*"); err != nil || !slices.Equal(keys, []string{"k"}) {
			t.Fatalf("List(a*) = %v, %v", keys, err)
		}
		opts, _ := goredis.ParseURL(url)
		c := goredis.NewClient(opts)
		defer c.Close()
		if v, err := c.Get(ctx, "ab:k").Result(); err != nil || v != "2" {
			t.Fatalf("Redis key ab:k = %q, %v (Trustee's <namespace>:<key>)", v, err)
		}
	})
	t.Run("BadURL", func(t *testing.T) {
		if _, err := Open(ctx, "redis://:secret-pw@127.0.0.1:notaport"); err == nil {
			t.Fatal("Open of a bad URL succeeded")
		}
	})
}
