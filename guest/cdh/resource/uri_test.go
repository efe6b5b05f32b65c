package resource

import (
	"errors"
	"net/url"
	"testing"
)

func TestParse(t *testing.T) {
	for in, want := range map[string]URI{
		"kbs:///default/key/1":                {Repository: "default", Type: "key", Tag: "1"},
		"kbs://kbs.example:8080/a/b/c.d":      {Host: "kbs.example:8080", Repository: "a", Type: "b", Tag: "c.d"},
		"kbs:///default/key/1?version=2":      {Repository: "default", Type: "key", Tag: "1", Query: "version=2"},
		"kbs:///my-repo/some_type/tag.v1.2-3": {Repository: "my-repo", Type: "some_type", Tag: "tag.v1.2-3"},
	} {
		got, err := Parse(in)
		if err != nil || got != want {
			t.Errorf("Parse(%q) = %+v, %v", in, got, err)
		}
		if got.String() != in && got.Host == "" && got.Query == "" {
			t.Errorf("String() = %q, want %q", got.String(), in)
		}
	}
	if p, _ := Parse("kbs:///default/key/1?v=2"); p.Path() != "default/key/1?v=2" {
		t.Errorf("Path() = %q", p.Path())
	}
	for _, in := range []string{"", "kbs://", "kbs:///", "kbs:///a/b", "kbs:///a/b/c/d", "http:///a/b/c",
		"kbs+pkcs11:///a/b/c", "kbs:///a/../c", "kbs:///a/./c", "kbs:///a/.b/c", "kbs:///a//c", "kbs:///a/b/c%2Fd",
		"kbs:///a/b/c#frag", "kbs://user@host/a/b/c", "kbs:a/b/c", "kbs:///a/b/ c", "default/key/1",
		"kbs:///a/b/c%3Fx=y", "kbs:///a/b/c?x=%zz", "kbs:///a/b/c?x;y"} {
		_, err := Parse(in)
		var uerr *URIError
		if !errors.Is(err, ErrInvalidURI) || !errors.As(err, &uerr) {
			t.Errorf("Parse(%q) = %v, want a URIError", in, err)
		}
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{"kbs:///default/key/1", "kbs://h:1/a/b/c?x=y", "kbs:///a/../b", "kbs:///%zz/a/b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		u, err := Parse(s)
		if err != nil {
			if !errors.Is(err, ErrInvalidURI) {
				t.Fatalf("untyped error %v", err)
			}
			return
		}
		// A parsed URI renders to one that parses to itself.
		again, err := Parse(u.String())
		if err != nil || again != u {
			t.Fatalf("round trip of %q: %+v, %v", s, again, err)
		}
	})
}

func TestNew(t *testing.T) {
	u, err := New("default", "key", "secret", url.Values{"override": {"yes"}, "a b": {"c&d"}})
	if err != nil || u.String() != "kbs:///default/key/secret?a+b=c%26d&override=yes" {
		t.Fatalf("New = %q, %v", u.String(), err)
	}
	if again, err := Parse(u.String()); err != nil || again != u {
		t.Fatalf("Parse(%q) = %+v, %v", u.String(), again, err)
	}
	// A tag cannot carry a query (an escaped '?' decoded by an HTTP
	// router), a path or a parent reference.
	for _, tag := range []string{"secret?override=yes", "secret#x", "a/b", "..", ".", "", "x y"} {
		var uerr *URIError
		if _, err := New("default", "key", tag, nil); !errors.As(err, &uerr) {
			t.Errorf("New(tag %q) = %v", tag, err)
		}
	}
}
