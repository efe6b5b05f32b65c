// Package resource parses the KBS resource URIs guests name secrets by:
// kbs:///repo/type/tag, or kbs://host:port/repo/type/tag, whose host is
// informative only (the CDH always asks the KBS it is configured with, as
// upstream's CDH does).
package resource

import (
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"strings"
)

// Scheme is the only scheme a resource URI may use.
const Scheme = "kbs"

// ErrInvalidURI is wrapped by every parse failure.
var ErrInvalidURI = errors.New("invalid kbs resource uri, want kbs://[<kbs-host>]/<repo>/<type>/<tag>")

// segment is the KBS's rule for one path segment.
var segment = regexp.MustCompile(`^[a-zA-Z0-9_-]+[a-zA-Z0-9_.-]*$`)

// maxLen bounds the input; real URIs are far shorter.
const maxLen = 4096

// URI is a parsed resource URI.
type URI struct {
	// Host is the KBS address the URI names, "" for kbs:///.
	Host                  string
	Repository, Type, Tag string
	// Query is the raw query (resource plugin parameters), if any.
	Query string
}

// URIError says why a string is not a resource URI.
type URIError struct {
	URI    string
	Reason string
}

func (e *URIError) Error() string { return fmt.Sprintf("%v: %q: %s", ErrInvalidURI, e.URI, e.Reason) }

// Unwrap makes errors.Is(err, ErrInvalidURI) hold.
func (e *URIError) Unwrap() error { return ErrInvalidURI }

// Parse parses s.
func Parse(s string) (URI, error) {
	fail := func(reason string) (URI, error) {
		if len(s) > 128 {
			s = s[:128] + "..."
		}
		return URI{}, &URIError{URI: s, Reason: reason}
	}
	if len(s) > maxLen {
		return fail("too long")
	}
	u, err := url.Parse(s)
	if err != nil {
		return fail("not a URL")
	}
	switch {
	case u.Scheme != Scheme:
		return fail("scheme must be kbs")
	case u.Opaque != "" || u.User != nil || u.Fragment != "":
		return fail("unexpected opaque part, user info or fragment")
	case u.RawPath != "":
		return fail("escaped characters in the path")
	}
	parts := strings.Split(strings.TrimPrefix(u.Path, "/"), "/")
	if !strings.HasPrefix(u.Path, "/") || len(parts) != 3 {
		return fail("path must be /<repo>/<type>/<tag>")
	}
	for _, p := range parts {
		if !segment.MatchString(p) {
			return fail("path segment " + fmt.Sprintf("%q", p) + " is not [a-zA-Z0-9_-]+[a-zA-Z0-9_.-]*")
		}
	}
	return URI{Host: u.Host, Repository: parts[0], Type: parts[1], Tag: parts[2], Query: u.RawQuery}, nil
}

// Path is the resource path the KBS serves: repo/type/tag[?query].
func (u URI) Path() string {
	p := u.Repository + "/" + u.Type + "/" + u.Tag
	if u.Query != "" {
		p += "?" + u.Query
	}
	return p
}

// String renders the URI back.
func (u URI) String() string { return Scheme + "://" + u.Host + "/" + u.Path() }

// IsURI reports whether s looks like a resource URI (whether or not valid).
func IsURI(s string) bool { return strings.HasPrefix(s, Scheme+"://") }
