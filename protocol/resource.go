package protocol

import (
	"net/url"
	"strings"
)

// maxSegment bounds one segment.
const maxSegment = 255

// ValidSegment reports whether s may be one segment of a resource path:
// Trustee's rule, ^[a-zA-Z0-9_-]+[a-zA-Z0-9_.-]*$, checked byte by byte
// (the regexp was a third of the cost of a path on every fetch). A segment
// starts with no dot, so it is never "." or "..", and a path never leaves
// its repository.
func ValidSegment(s string) bool {
	if s == "" || len(s) > maxSegment || s[0] == '.' {
		return false
	}
	for i := range len(s) {
		switch c := s[i]; {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '_', c == '-', c == '.':
		default:
			return false
		}
	}
	return true
}

// ResourcePath is repository/type/tag.
type ResourcePath struct{ Repository, Type, Tag string }

func (p ResourcePath) String() string { return p.Repository + "/" + p.Type + "/" + p.Tag }

// NewResourcePath checks each segment of a path given in parts.
func NewResourcePath(repo, typ, tag string) (ResourcePath, error) {
	for _, s := range [...]string{repo, typ, tag} {
		if !ValidSegment(s) {
			return ResourcePath{}, Errorf(KindInvalidPath, "bad resource path segment %q", s)
		}
	}
	return ResourcePath{repo, typ, tag}, nil
}

// ParseResourcePath checks a "repo/type/tag" path.
func ParseResourcePath(s string) (ResourcePath, error) {
	parts := strings.Split(s, "/")
	if len(parts) != 3 {
		return ResourcePath{}, Errorf(KindInvalidPath, "resource path %q must be repository/type/tag", s)
	}
	return NewResourcePath(parts[0], parts[1], parts[2])
}

// ParseResourceRequest checks a "repo/type/tag[?query]" resource request
// and returns it with its query in canonical form (url.Values.Encode:
// keys sorted, every byte outside the unreserved set escaped), so nothing
// reaches the KBS but the three segments and the parameters the caller
// wrote after the one '?'.
func ParseResourceRequest(s string) (ResourcePath, string, error) {
	path, rawQuery, hasQuery := strings.Cut(s, "?")
	p, err := ParseResourcePath(path)
	if err != nil {
		return ResourcePath{}, "", err
	}
	if !hasQuery {
		return p, "", nil
	}
	q, err := url.ParseQuery(rawQuery)
	if err != nil {
		return ResourcePath{}, "", Errorf(KindInvalidPath, "resource query %q: %v", rawQuery, err)
	}
	return p, q.Encode(), nil
}
