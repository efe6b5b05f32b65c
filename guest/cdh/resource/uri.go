// Package resource parses the KBS resource URIs guests name secrets by:
// kbs:///repo/type/tag, or kbs://host:port/repo/type/tag, whose host is
// informative only (the CDH always asks the KBS it is configured with, as
// upstream's CDH does).
package resource

import (
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/cocoon-cc/cocoon/protocol"
)

// Scheme is the only scheme a resource URI may use.
const Scheme = "kbs"

// ErrInvalidURI is wrapped by every parse failure.
var ErrInvalidURI = errors.New("invalid kbs resource uri, want kbs://[<kbs-host>]/<repo>/<type>/<tag>")

// badSegments says why a path is refused.
const badSegments = "path segments must be [a-zA-Z0-9_-]+[a-zA-Z0-9_.-]*, 255 bytes at most"

// maxLen bounds the input; real URIs are far shorter.
const maxLen = 4096

// URI is a parsed resource URI.
type URI struct {
	// Host is the KBS address the URI names, "" for kbs:///.
	Host                  string
	Repository, Type, Tag string
	// Query holds the resource plugin parameters the caller wrote after
	// the path's '?', if any, in canonical form (url.Values.Encode).
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
	fail := func(reason string) (URI, error) { return URI{}, invalid(s, reason) }
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
	q, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return fail("query: " + err.Error())
	}
	r, err := New(parts[0], parts[1], parts[2], q)
	if err != nil {
		return fail(badSegments)
	}
	r.Host = u.Host
	return r, nil
}

// New returns the kbs:/// URI of repo/type/tag with the given resource
// plugin parameters (nil for none), checking each segment against the
// KBS's rule, so a segment cannot carry a query or leave its repository.
func New(repo, typ, tag string, query url.Values) (URI, error) {
	p, err := protocol.NewResourcePath(repo, typ, tag)
	if err != nil {
		return URI{}, invalid(URI{Repository: repo, Type: typ, Tag: tag}.String(), badSegments)
	}
	return URI{Repository: p.Repository, Type: p.Type, Tag: p.Tag, Query: query.Encode()}, nil
}

// invalid is the error for s, shortened for logs.
func invalid(s, reason string) *URIError {
	if len(s) > 128 {
		s = s[:128] + "..."
	}
	return &URIError{URI: s, Reason: reason}
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
