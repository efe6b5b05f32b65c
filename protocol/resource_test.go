package protocol

import (
	"errors"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
)

func TestParseResourceRequest(t *testing.T) {
	for in, want := range map[string][2]string{
		"default/key/1":                    {"default/key/1", ""},
		"default/key/1?version=2":          {"default/key/1", "version=2"},
		"default/key/1?b=2&a=1":            {"default/key/1", "a=1&b=2"},
		"default/key/1?a=x%2Fy+z":          {"default/key/1", "a=x%2Fy+z"},
		"default/key/1?":                   {"default/key/1", ""},
		"my-repo/some_type/tag.v1.2-3?x=y": {"my-repo/some_type/tag.v1.2-3", "x=y"},
	} {
		p, q, err := ParseResourceRequest(in)
		if err != nil || p.String() != want[0] || q != want[1] {
			t.Errorf("ParseResourceRequest(%q) = %q, %q, %v; want %q", in, p, q, err, want)
		}
	}
	for _, in := range []string{"", "a/b", "a/b/c/d", "../b/c", "a/../c", "a/./c", "a/.b/c", "a//c", "a/b/c%3fx=y",
		"a/b/c%2Fd", "a/b/ c", "a/b/c?x=%zz", "a/b/c?x;y", "/a/b/c", "a/b/" + strings.Repeat("x", 256)} {
		if _, _, err := ParseResourceRequest(in); !isInvalidPath(err) {
			t.Errorf("ParseResourceRequest(%q) = %v, want InvalidRequestPath", in, err)
		}
	}
	if _, err := NewResourcePath("default", "key", "secret?override=yes"); !isInvalidPath(err) {
		t.Errorf("a tag carrying a query: %v", err)
	}
}

func isInvalidPath(err error) bool {
	var kerr *Error
	return errors.As(err, &kerr) && kerr.Kind == KindInvalidPath && kerr.Status() == http.StatusNotFound
}

func FuzzParseResourceRequest(f *testing.F) {
	for _, s := range []string{"default/key/1", "a/b/c?x=y", "../b/c", "a/b", "a/b/c/d", "a//c", "a/./c",
		"a-b_c/d.e/f.", "-/_/0", ".a/b/c", "a/b/" + strings.Repeat("x", 256), "", "/", "a/b/c/", "é/b/c",
		"a\x00/b/c", "a/b/c?%zz", "a/b/c?x=1&x=2&y", "a/b/c??x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, q, err := ParseResourceRequest(s)
		if err != nil {
			if !isInvalidPath(err) {
				t.Fatalf("error %v is not InvalidRequestPath", err)
			}
			return
		}
		for _, seg := range []string{p.Repository, p.Type, p.Tag} {
			if seg == "" || seg == "." || seg == ".." || strings.ContainsAny(seg, "/\\\x00 %?#&=") || len(seg) > 255 || seg[0] == '.' {
				t.Fatalf("segment %q accepted", seg)
			}
		}
		if path, _, _ := strings.Cut(s, "?"); p.String() != path {
			t.Fatalf("%q parsed to %q", s, p)
		}
		// The query is canonical: it parses to itself, and carries no
		// byte that could end it or start another part of a URL.
		if strings.ContainsAny(q, "?#/ ;") {
			t.Fatalf("query %q of %q", q, s)
		}
		if v, err := url.ParseQuery(q); err != nil || v.Encode() != q {
			t.Fatalf("query %q is not canonical", q)
		}
	})
}

// FuzzValidSegment: the byte-by-byte check is Trustee's regexp exactly.
func FuzzValidSegment(f *testing.F) {
	trustee := regexp.MustCompile(`^[a-zA-Z0-9_-]+[a-zA-Z0-9_.-]*$`)
	for _, s := range []string{"default", "key-1", "a.b", ".", "..", ".x", "x.", "-_", "", "a/b", "é", strings.Repeat("a", 256), "a\x00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if got, want := ValidSegment(s), len(s) <= maxSegment && trustee.MatchString(s); got != want {
			t.Fatalf("ValidSegment(%q) = %v, Trustee's rule says %v", s, got, want)
		}
	})
}
