package signature

import (
	"errors"
	"fmt"
	"regexp"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
)

// dockerRef is a reference in containers/image's fully expanded form
// (docker.io/library/busybox, where go-containerregistry says
// index.docker.io), which is how policy scopes and signed identities
// are written; tag and digest are empty when the reference has none.
type dockerRef struct {
	repo, tag, digest string
}

func toDockerRef(r name.Reference) dockerRef {
	d := dockerRef{repo: repoName(r.Context())}
	switch r := r.(type) {
	case name.Tag:
		d.tag = r.TagStr()
	case name.Digest:
		d.digest = r.DigestStr()
	}
	return d
}

func repoName(r name.Repository) string {
	host := r.RegistryStr()
	if host == name.DefaultRegistry {
		host = "docker.io"
	}
	return host + "/" + r.RepositoryStr()
}

// parseDockerRef parses a reference as a signature or a policy writes it;
// unlike name.ParseReference it adds no default tag.
func parseDockerRef(s string) (dockerRef, error) {
	r, err := name.ParseReference(s, name.WithDefaultTag(""))
	if err != nil {
		return dockerRef{}, err
	}
	return toDockerRef(r), nil
}

func (d dockerRef) nameOnly() bool { return d.tag == "" && d.digest == "" }

func (d dockerRef) String() string {
	s := d.repo
	if d.tag != "" {
		s += ":" + d.tag
	}
	if d.digest != "" {
		s += "@" + d.digest
	}
	return s
}

// check validates an identity's own fields when the policy is parsed.
func (id *Identity) check() error {
	switch id.Type {
	case MatchRepoDigestOrExact, MatchRepository, MatchExact:
		return nil
	case ExactReference:
		r, err := parseDockerRef(id.DockerReference)
		if err != nil || r.nameOnly() {
			return fmt.Errorf("exactReference dockerReference %q is not a tagged or digested reference", id.DockerReference)
		}
	case ExactRepository:
		if r, err := parseDockerRef(id.DockerRepository); err != nil || !r.nameOnly() {
			return fmt.Errorf("exactRepository dockerRepository %q is not a repository", id.DockerRepository)
		}
	case RemapIdentity:
		for _, p := range []string{id.Prefix, id.SignedPrefix} {
			if err := checkPrefix(p); err != nil {
				return fmt.Errorf("remapIdentity: %v", err)
			}
		}
	default:
		return fmt.Errorf("signedIdentity %q is not supported", id.Type)
	}
	return nil
}

// pathComponent is one component of a repository path (the distribution
// reference grammar).
var pathComponent = regexp.MustCompile(`^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$`)

// checkPrefix accepts a host[:port], a namespace or a repository, fully
// expanded: no tag, no digest.
func checkPrefix(p string) error {
	host, path, nested := strings.Cut(p, "/")
	bad := host == "" || strings.ContainsAny(host, "@") || (nested && path == "")
	if _, err := name.NewRegistry(host, name.StrictValidation); err != nil {
		bad = true
	}
	for _, c := range strings.Split(path, "/") {
		bad = bad || (nested && !pathComponent.MatchString(c))
	}
	if bad {
		return fmt.Errorf("prefix %q: not a host[:port] or repository namespace", p)
	}
	return nil
}

// matchIdentity applies signedIdentity (default matchRepoDigestOrExact) to
// the identity a signature claims, as containers/image does: a signed name
// without tag or digest matches only the repository-level types.
func matchIdentity(ref name.Reference, signed string, id *Identity) error {
	sig, err := parseDockerRef(signed)
	if err != nil {
		return fmt.Errorf("signed identity %q: %v", signed, err)
	}
	intended := toDockerRef(ref)
	kind := MatchRepoDigestOrExact
	if id != nil {
		kind = id.Type
	}
	var ok bool
	switch kind {
	case MatchExact:
		ok = !sig.nameOnly() && !intended.nameOnly() && sig.String() == intended.String()
	case MatchRepoDigestOrExact:
		ok = repoDigestOrExact(intended, sig)
	case MatchRepository:
		ok = sig.repo == intended.repo
	case ExactReference:
		want, _ := parseDockerRef(id.DockerReference)
		ok = !sig.nameOnly() && sig.String() == want.String()
	case ExactRepository:
		want, _ := parseDockerRef(id.DockerRepository)
		ok = sig.repo == want.repo
	case RemapIdentity:
		ok = repoDigestOrExact(id.remap(intended), sig)
	default:
		return errors.New("signedIdentity " + kind + " is not supported")
	}
	if !ok {
		return fmt.Errorf("signed identity %s does not match %s (%s)", signed, intended, kind)
	}
	return nil
}

// repoDigestOrExact: a tagged image needs a signature naming that tag; an
// image pulled by digest needs one naming its repository (the digest
// itself is checked against the signed manifest digest).
func repoDigestOrExact(intended, sig dockerRef) bool {
	switch {
	case sig.nameOnly():
		return false
	case intended.tag != "":
		return sig.String() == intended.String()
	case intended.digest != "":
		return sig.repo == intended.repo
	}
	return false
}

// remap replaces Prefix by SignedPrefix when the repository is Prefix or
// lies under it.
func (id *Identity) remap(r dockerRef) dockerRef {
	if rest, ok := strings.CutPrefix(r.repo, id.Prefix); ok && (rest == "" || rest[0] == '/') {
		r.repo = id.SignedPrefix + rest
	}
	return r
}
