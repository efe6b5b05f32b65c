// Package rvps is the reference value provider service: it takes signed or
// plain provenance messages, extracts named reference values from them and
// answers the attestation policy's query_reference_value lookups.
package rvps

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/cocoon-cc/cocoon/store"
)

// MessageVersion is the only provenance message version accepted.
const MessageVersion = "0.1.0"

// DefaultValidity is how long a reference value lives unless told otherwise.
const DefaultValidity = 365 * 24 * time.Hour

// Namespace is the store namespace of reference values.
const Namespace = "reference-values"

// Errors of the RVPS.
var (
	ErrMalformedMessage   = errors.New("malformed reference value message")
	ErrUnsupportedVersion = errors.New("unsupported reference value message version")
	ErrUnsupportedType    = errors.New("unsupported reference value provenance type")
)

// Message registers reference values.
type Message struct {
	Version string `json:"version"`
	Type    string `json:"type"`
	Payload string `json:"payload"`
}

// ReferenceValue is a stored value with its expiry.
type ReferenceValue struct {
	Version    string          `json:"version"`
	Name       string          `json:"name"`
	Expiration time.Time       `json:"expiration"`
	Value      json.RawMessage `json:"value"`
}

// Extractor turns a provenance payload into reference values.
type Extractor interface {
	Extract(payload string) (map[string]json.RawMessage, error)
}

// Service stores and serves reference values. Values read are kept in
// memory: every appraisal looks several up, and only Register and Expire
// change them. When replicas share the store, Forget drops what another
// process may have changed.
type Service struct {
	store      store.Store
	extractors map[string]Extractor
	validity   time.Duration
	now        func() time.Time

	mu    sync.RWMutex
	cache map[string]*ReferenceValue
	// version changes whenever a Query may answer differently: at every
	// change, and when the next of the values read expires.
	version    uint64
	nextExpiry time.Time
	// epoch moves at every Forget: a value read before it is not cached.
	epoch uint64
}

// New returns a Service over s with the sample extractor registered.
func New(s store.Store) *Service {
	return &Service{store: s, extractors: map[string]Extractor{"sample": Sample{}},
		validity: DefaultValidity, now: time.Now, cache: map[string]*ReferenceValue{}}
}

// Register verifies a provenance message and stores the values it carries.
func (s *Service) Register(ctx context.Context, raw []byte) ([]string, error) {
	var m Message
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformedMessage, err)
	}
	if m.Version != MessageVersion {
		return nil, fmt.Errorf("%w: %q, want %s", ErrUnsupportedVersion, m.Version, MessageVersion)
	}
	ex, ok := s.extractors[m.Type]
	if !ok {
		return nil, fmt.Errorf("%w: %q", ErrUnsupportedType, m.Type)
	}
	values, err := ex.Extract(m.Payload)
	if err != nil {
		return nil, err
	}
	exp := s.now().Add(s.validity).UTC().Truncate(time.Second)
	names := make([]string, 0, len(values))
	for name, v := range values {
		rv := &ReferenceValue{Version: MessageVersion, Name: name, Expiration: exp, Value: v}
		b, _ := json.Marshal(rv)
		if err := s.store.Put(ctx, Namespace, name, b); err != nil {
			return nil, fmt.Errorf("rvps: store %s: %w", name, err)
		}
		s.set(name, rv)
		names = append(names, name)
	}
	return names, nil
}

// Query returns the value named name, or nil when there is none or it
// expired: an expired reference value must not vouch for anything.
func (s *Service) Query(ctx context.Context, name string) (json.RawMessage, error) {
	rv, err := s.load(ctx, name)
	if err != nil || rv == nil {
		return nil, err
	}
	if !s.now().Before(rv.Expiration) {
		return nil, nil
	}
	return rv.Value, nil
}

// ServeHTTPValue answers a lookup as the attestation service does: the
// value's JSON, or null when there is none.
func (s *Service) ServeHTTPValue(w http.ResponseWriter, r *http.Request, name string) error {
	v, err := s.Query(r.Context(), name)
	if err != nil {
		return err
	}
	if v == nil {
		v = json.RawMessage("null")
	}
	w.Header().Set("Content-Type", "application/json")
	_, err = w.Write(v)
	return err
}

// List returns every stored value by name, expired ones too.
func (s *Service) List(ctx context.Context) ([]*ReferenceValue, error) {
	names, err := s.store.List(ctx, Namespace)
	if err != nil {
		return nil, fmt.Errorf("rvps: list: %w", err)
	}
	out := make([]*ReferenceValue, 0, len(names))
	for _, name := range names {
		rv, err := s.load(ctx, name)
		if err != nil {
			return nil, err
		}
		if rv != nil { // deleted since List
			out = append(out, rv)
		}
	}
	return out, nil
}

// Expire sets when the value named name stops vouching for anything;
// a time in the past revokes it at once.
func (s *Service) Expire(ctx context.Context, name string, at time.Time) error {
	rv, err := s.load(ctx, name)
	if err != nil {
		return err
	}
	if rv == nil {
		return fmt.Errorf("rvps: no reference value %q", name)
	}
	updated := *rv
	updated.Expiration = at.UTC()
	b, _ := json.Marshal(updated)
	if err := s.store.Put(ctx, Namespace, name, b); err != nil {
		return fmt.Errorf("rvps: store %s: %w", name, err)
	}
	s.set(name, &updated)
	return nil
}

// set caches a new or changed value.
func (s *Service) set(name string, rv *ReferenceValue) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cache[name] = rv
	s.version++
	s.noteExpiry(rv)
}

// noteExpiry keeps nextExpiry the earliest future expiry of the values
// cached. Called with mu held.
func (s *Service) noteExpiry(rv *ReferenceValue) {
	if rv.Expiration.After(s.now()) && (s.nextExpiry.IsZero() || rv.Expiration.Before(s.nextExpiry)) {
		s.nextExpiry = rv.Expiration
	}
}

// Version names the state of the values Query answers with: it changes
// when a value is registered or its expiry changed, and when a value read
// before expires. Policy decisions that read reference values are cached
// under it.
func (s *Service) Version() uint64 {
	now := s.now()
	s.mu.RLock()
	v, next := s.version, s.nextExpiry
	s.mu.RUnlock()
	if next.IsZero() || now.Before(next) {
		return v
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.nextExpiry.IsZero() && !now.Before(s.nextExpiry) {
		s.version++
		s.nextExpiry = time.Time{}
		for _, rv := range s.cache {
			s.noteExpiry(rv)
		}
	}
	return s.version
}

// Forget drops every cached value and moves Version: another process
// sharing the store changed the reference values.
func (s *Service) Forget() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cache = map[string]*ReferenceValue{}
	s.version++
	s.epoch++
	s.nextExpiry = time.Time{}
}

// load returns the stored value named name (nil when there is none).
func (s *Service) load(ctx context.Context, name string) (*ReferenceValue, error) {
	s.mu.RLock()
	rv, ok := s.cache[name]
	epoch := s.epoch
	s.mu.RUnlock()
	if ok {
		return rv, nil
	}
	raw, err := s.store.Get(ctx, Namespace, name)
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	rv = &ReferenceValue{}
	if err := json.Unmarshal(raw, rv); err != nil {
		return nil, fmt.Errorf("rvps: stored %s: %w", name, err)
	}
	s.mu.Lock()
	if s.epoch == epoch {
		s.cache[name] = rv
		s.noteExpiry(rv)
	}
	s.mu.Unlock()
	return rv, nil
}

// Sample is the "sample" provenance: base64 of a JSON object mapping names
// to values, with no signature. Fit for tests and trusted admins only.
type Sample struct{}

// Extract implements Extractor.
func (Sample) Extract(payload string) (map[string]json.RawMessage, error) {
	b, err := base64.StdEncoding.DecodeString(payload)
	if err != nil {
		return nil, fmt.Errorf("%w: payload: %v", ErrMalformedMessage, err)
	}
	var values map[string]json.RawMessage
	if err := json.Unmarshal(b, &values); err != nil {
		return nil, fmt.Errorf("%w: payload: %v", ErrMalformedMessage, err)
	}
	for name := range values {
		if name == "" || len(name) > 256 {
			return nil, fmt.Errorf("%w: bad reference value name", ErrMalformedMessage)
		}
	}
	return values, nil
}
