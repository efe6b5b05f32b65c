package store

import (
	"context"
	"errors"
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

// Close implements Store.
func (r *Routed) Close() error {
	errs := []error{r.def.Close()}
	for _, s := range r.routes {
		errs = append(errs, s.Close())
	}
	return errors.Join(errs...)
}
