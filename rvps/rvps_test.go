package rvps

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cocoon-cc/cocoon/store/memory"
)

var ctx = context.Background()

// clock is a settable time source for Service.now.
type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func newService(t testing.TB) (*Service, *memory.Store, *clock) {
	t.Helper()
	st := memory.New()
	c := &clock{t: time.Date(2025, 3, 1, 12, 0, 0, 500, time.UTC)}
	s := New(st)
	s.now = c.now
	return s, st, c
}

func message(version, typ string, values any) []byte {
	payload, _ := json.Marshal(values)
	b, _ := json.Marshal(Message{Version: version, Type: typ, Payload: base64.StdEncoding.EncodeToString(payload)})
	return b
}

// sampleValues are the reference values Trustee's default policy reads for
// the sample TEE.
var sampleValues = map[string]any{
	"launch_digest":         []string{"abcde"},
	"svn":                   []string{"1"},
	"major_version":         1,
	"minimum_minor_version": 0,
}

func TestRegisterQuery(t *testing.T) {
	s, st, c := newService(t)
	names, err := s.Register(ctx, message("0.1.0", "sample", sampleValues))
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(names)
	if want := []string{"launch_digest", "major_version", "minimum_minor_version", "svn"}; !slices.Equal(names, want) {
		t.Errorf("names %v, want %v", names, want)
	}
	for name, want := range map[string]string{
		"launch_digest": `["abcde"]`, "svn": `["1"]`, "major_version": `1`, "minimum_minor_version": `0`,
	} {
		got, err := s.Query(ctx, name)
		if err != nil || string(got) != want {
			t.Errorf("Query(%s) = %s, %v; want %s", name, got, err, want)
		}
	}
	if got, err := s.Query(ctx, "unknown"); got != nil || err != nil {
		t.Errorf("Query(unknown) = %s, %v", got, err)
	}
	// The stored record is Trustee's shape, expiring after the default validity.
	raw, err := st.Get(ctx, Namespace, "svn")
	if err != nil {
		t.Fatal(err)
	}
	var rec map[string]any
	if err := json.Unmarshal(raw, &rec); err != nil {
		t.Fatal(err)
	}
	wantExp := c.t.Add(DefaultValidity).UTC().Truncate(time.Second).Format(time.RFC3339)
	if rec["version"] != "0.1.0" || rec["name"] != "svn" || rec["expiration"] != wantExp {
		t.Errorf("stored record %s (want expiration %s)", raw, wantExp)
	}
	if v, _ := json.Marshal(rec["value"]); string(v) != `["1"]` {
		t.Errorf("stored value %s", v)
	}
}

func TestRegisterReplaces(t *testing.T) {
	s, _, _ := newService(t)
	if _, err := s.Register(ctx, message("0.1.0", "sample", map[string]any{"svn": []string{"1"}})); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Register(ctx, message("0.1.0", "sample", map[string]any{"svn": []string{"2", "3"}})); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.Query(ctx, "svn"); string(got) != `["2","3"]` {
		t.Errorf("svn = %s", got)
	}
}

func TestExpiry(t *testing.T) {
	s, _, c := newService(t)
	start := c.t
	if _, err := s.Register(ctx, message("0.1.0", "sample", map[string]any{"svn": []string{"1"}})); err != nil {
		t.Fatal(err)
	}
	exp := start.Add(DefaultValidity).Truncate(time.Second)
	for _, tc := range []struct {
		at   time.Time
		live bool
	}{
		{start, true},
		{start.Add(364 * 24 * time.Hour), true},
		{exp.Add(-time.Nanosecond), true},
		{exp, false},
		{exp.Add(time.Second), false},
		{start.Add(10 * 365 * 24 * time.Hour), false},
	} {
		c.t = tc.at
		got, err := s.Query(ctx, "svn")
		if err != nil {
			t.Fatal(err)
		}
		if (got != nil) != tc.live {
			t.Errorf("at %v: Query = %s, want live=%v", tc.at.Sub(start), got, tc.live)
		}
	}
	// Registering again renews it.
	if _, err := s.Register(ctx, message("0.1.0", "sample", map[string]any{"svn": []string{"1"}})); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.Query(ctx, "svn"); string(got) != `["1"]` {
		t.Errorf("after renewal: %s", got)
	}
	// A shorter validity is honoured as well.
	s.validity = time.Minute
	s.Register(ctx, message("0.1.0", "sample", map[string]any{"short": true}))
	c.t = c.t.Add(2 * time.Minute)
	if got, _ := s.Query(ctx, "short"); got != nil {
		t.Errorf("short-lived value still served: %s", got)
	}
}

func TestRegisterRefuses(t *testing.T) {
	b64 := base64.StdEncoding.EncodeToString
	msg := func(m map[string]any) []byte { b, _ := json.Marshal(m); return b }
	cases := []struct {
		name string
		raw  []byte
		want error
	}{
		{"empty", nil, ErrMalformedMessage},
		{"not JSON", []byte("version=0.1.0"), ErrMalformedMessage},
		{"JSON array", []byte(`[]`), ErrMalformedMessage},
		{"version type", []byte(`{"version":1,"type":"sample","payload":""}`), ErrMalformedMessage},
		{"no version", msg(map[string]any{"type": "sample", "payload": b64([]byte(`{"a":1}`))}), ErrUnsupportedVersion},
		{"version 0.2.0", message("0.2.0", "sample", sampleValues), ErrUnsupportedVersion},
		{"version 1.0.0", message("1.0.0", "sample", sampleValues), ErrUnsupportedVersion},
		{"type swid", message("0.1.0", "swid", sampleValues), ErrUnsupportedType},
		{"type corim", message("0.1.0", "corim", sampleValues), ErrUnsupportedType},
		{"type empty", message("0.1.0", "", sampleValues), ErrUnsupportedType},
		{"type case", message("0.1.0", "Sample", sampleValues), ErrUnsupportedType},
		{"payload not base64", msg(map[string]any{"version": "0.1.0", "type": "sample", "payload": "!!!"}), ErrMalformedMessage},
		{"payload base64url", msg(map[string]any{"version": "0.1.0", "type": "sample", "payload": base64.URLEncoding.EncodeToString([]byte(`{"a":"??>"}`))}), ErrMalformedMessage},
		{"payload not JSON", msg(map[string]any{"version": "0.1.0", "type": "sample", "payload": b64([]byte("a=1"))}), ErrMalformedMessage},
		{"payload array", message("0.1.0", "sample", []int{1, 2}), ErrMalformedMessage},
		{"payload string", message("0.1.0", "sample", "svn"), ErrMalformedMessage},
		{"empty name", message("0.1.0", "sample", map[string]any{"ok": 1, "": 2}), ErrMalformedMessage},
		{"long name", message("0.1.0", "sample", map[string]any{"ok": 1, strings.Repeat("n", 257): 2}), ErrMalformedMessage},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s, st, _ := newService(t)
			names, err := s.Register(ctx, c.raw)
			if !errors.Is(err, c.want) {
				t.Fatalf("Register = %v, %v; want %v", names, err, c.want)
			}
			if names != nil {
				t.Errorf("names returned with an error: %v", names)
			}
			if keys, _ := st.List(ctx, Namespace); len(keys) != 0 {
				t.Errorf("refused message stored %v", keys)
			}
		})
	}
	// The longest name accepted.
	s, _, _ := newService(t)
	long := strings.Repeat("n", 256)
	if _, err := s.Register(ctx, message("0.1.0", "sample", map[string]any{long: 1})); err != nil {
		t.Errorf("256-byte name: %v", err)
	}
	// An empty object registers nothing, successfully.
	if names, err := s.Register(ctx, message("0.1.0", "sample", map[string]any{})); err != nil || len(names) != 0 {
		t.Errorf("empty payload object: %v, %v", names, err)
	}
}

func TestQueryCorruptRecord(t *testing.T) {
	s, st, _ := newService(t)
	st.Put(ctx, Namespace, "bad", []byte("not json"))
	if _, err := s.Query(ctx, "bad"); err == nil {
		t.Error("corrupt record served")
	}
}

// FuzzRegister feeds arbitrary messages: either a typed error and nothing
// stored, or every registered name answers with the value it was given.
func FuzzRegister(f *testing.F) {
	f.Add(message("0.1.0", "sample", sampleValues))
	f.Add(message("0.1.0", "sample", map[string]any{"a": nil, "b": "<&>", "c": 1.5e300}))
	f.Add(message("0.2.0", "sample", sampleValues))
	f.Add(message("0.1.0", "swid", sampleValues))
	f.Add([]byte(`{"version":"0.1.0","type":"sample","payload":"e30="}`))
	f.Add([]byte(`{"version":"0.1.0","type":"sample","payload":"eyIiOjF9"}`))
	f.Add([]byte(`{}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		s, st, _ := newService(t)
		names, err := s.Register(ctx, raw)
		if err != nil {
			if !errors.Is(err, ErrMalformedMessage) && !errors.Is(err, ErrUnsupportedVersion) && !errors.Is(err, ErrUnsupportedType) {
				t.Fatalf("untyped error %v", err)
			}
			if keys, _ := st.List(ctx, Namespace); len(keys) != 0 {
				t.Fatalf("refused message stored %v", keys)
			}
			return
		}
		var m Message
		if json.Unmarshal(raw, &m) != nil || m.Version != MessageVersion || m.Type != "sample" {
			t.Fatalf("accepted %q", raw)
		}
		payload, _ := base64.StdEncoding.DecodeString(m.Payload)
		var values map[string]any
		if err := json.Unmarshal(payload, &values); err != nil {
			t.Fatalf("accepted payload %q: %v", payload, err)
		}
		if len(names) != len(values) {
			t.Fatalf("registered %d names of %d", len(names), len(values))
		}
		for _, name := range names {
			got, err := s.Query(ctx, name)
			if err != nil || got == nil {
				t.Fatalf("Query(%q) = %s, %v", name, got, err)
			}
			var v any
			if err := json.Unmarshal(got, &v); err != nil {
				t.Fatalf("Query(%q) returned invalid JSON %q", name, got)
			}
			if !reflect.DeepEqual(v, values[name]) {
				t.Fatalf("Query(%q) = %v, registered %v", name, v, values[name])
			}
		}
	})
}

func TestExpireRevokesAtOnce(t *testing.T) {
	s := New(memory.New())
	msg := `{"version":"0.1.0","type":"sample","payload":"` + base64.StdEncoding.EncodeToString([]byte(`{"x":["1"]}`)) + `"}`
	if _, err := s.Register(context.Background(), []byte(msg)); err != nil {
		t.Fatal(err)
	}
	if v, _ := s.Query(context.Background(), "x"); v == nil {
		t.Fatal("registered value not found")
	}
	if err := s.Expire(context.Background(), "x", time.Now().Add(-time.Second)); err != nil {
		t.Fatal(err)
	}
	if v, _ := s.Query(context.Background(), "x"); v != nil {
		t.Fatalf("revoked value still answers %s", v)
	}
	// A new Service over the same store (a restart) sees the revocation too.
	if v, _ := New(s.store).Query(context.Background(), "x"); v != nil {
		t.Fatalf("revocation not stored: %s", v)
	}
	if err := s.Expire(context.Background(), "missing", time.Now()); err == nil {
		t.Fatal("expiring a missing value succeeded")
	}
}

// TestVersion: the version changes whenever a Query may answer differently
// (a value registered, its expiry changed, a value read expiring) and at no
// other time.
func TestVersion(t *testing.T) {
	s, st, c := newService(t)
	v0 := s.Version()
	if s.Version() != v0 {
		t.Fatal("version changed by itself")
	}
	s.validity = time.Hour
	s.Register(ctx, message("0.1.0", "sample", map[string]any{"a": 1}))
	v1 := s.Version()
	if v1 == v0 {
		t.Error("register kept the version")
	}
	s.validity = 2 * time.Hour
	s.Register(ctx, message("0.1.0", "sample", map[string]any{"b": 1}))
	v2 := s.Version()
	if v2 == v1 {
		t.Error("second register kept the version")
	}
	c.t = c.t.Add(30 * time.Minute)
	if s.Version() != v2 {
		t.Error("version changed before any expiry")
	}
	c.t = c.t.Add(31 * time.Minute) // a expired
	v3 := s.Version()
	if v3 == v2 {
		t.Error("a's expiry kept the version")
	}
	if s.Version() != v3 {
		t.Error("version changed twice for one expiry")
	}
	c.t = c.t.Add(time.Hour) // b expired
	if s.Version() == v3 {
		t.Error("b's expiry kept the version")
	}
	if err := s.Expire(ctx, "b", c.t.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	v4 := s.Version()
	c.t = c.t.Add(2 * time.Hour)
	if s.Version() == v4 {
		t.Error("the new expiry kept the version")
	}
	// A service that reads values stored before it started counts their
	// expiries too.
	s2 := New(st)
	s2.now = c.now
	s2.validity = time.Hour
	s2.Register(ctx, message("0.1.0", "sample", map[string]any{"c": 1}))
	s3 := New(st)
	s3.now = c.now
	if got, _ := s3.Query(ctx, "c"); got == nil {
		t.Fatal("c not stored")
	}
	v5 := s3.Version()
	c.t = c.t.Add(2 * time.Hour)
	if s3.Version() == v5 {
		t.Error("the expiry of a value loaded from the store kept the version")
	}
}
