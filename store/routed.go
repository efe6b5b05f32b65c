package store

import (
	"context"
	"errors"
	"fmt"
)

// Routed is a Store that keeps some namespaces in stores of their own
// (suited to their records) and the others in a default store.
type Routed struct {
	def    Store
	routes map[string]Store
}

// NewRouted returns a Store sending namespace ns to routes[ns], if set,
// else to def. Closing it closes them all.
func NewRouted(def Store, routes map[string]Store) *Routed {
	return &Routed{def: def, routes: routes}
}

func (r *Routed) of(ns string) Store {
	if s, ok := r.routes[ns]; ok {
		return s
	}
	return r.def
}

// Get implements Store.
func (r *Routed) Get(ctx context.Context, ns, key string) ([]byte, error) {
	return r.of(ns).Get(ctx, ns, key)
}

// Put implements Store.
func (r *Routed) Put(ctx context.Context, ns, key string, value []byte) error {
	return r.of(ns).Put(ctx, ns, key, value)
}

// Delete implements Store.
func (r *Routed) Delete(ctx context.Context, ns, key string) error {
	return r.of(ns).Delete(ctx, ns, key)
}

// List implements Store.
func (r *Routed) List(ctx context.Context, ns string) ([]string, error) {
	return r.of(ns).List(ctx, ns)
}

// Update implements Store.
func (r *Routed) Update(ctx context.Context, ns, key string, fn func([]byte) ([]byte, error)) error {
	return r.of(ns).Update(ctx, ns, key, fn)
}

// Insert implements Inserter.
func (r *Routed) Insert(ctx context.Context, ns, key string, value []byte) ([]byte, bool, error) {
	return Insert(ctx, r.of(ns), ns, key, value)
}

// Versions implements Versioner: the namespaces must all live in one
// store that keeps versions.
func (r *Routed) Versions(ctx context.Context, ns ...string) ([]uint64, error) {
	if len(ns) == 0 {
		return nil, nil
	}
	s := r.of(ns[0])
	for _, n := range ns[1:] {
		if r.of(n) != s {
			return nil, fmt.Errorf("store: versions of %q and %q live in different stores", ns[0], n)
		}
	}
	return Versions(ctx, s, ns...)
}

// Close implements Store.
func (r *Routed) Close() error {
	errs := []error{r.def.Close()}
	for _, s := range r.routes {
		errs = append(errs, s.Close())
	}
	return errors.Join(errs...)
}
