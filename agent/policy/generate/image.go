package generate

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// ErrImage is returned when an image cannot be resolved.
var ErrImage = errors.New("cannot resolve image")

// Image is a container image as the policy pins it.
type Image struct {
	// Ref is the image by digest (repository@sha256:...), written as
	// containerd names it (docker.io/library/busybox@sha256:...): the
	// pod's YAML names it so, and so do the requests the agent checks.
	Ref string
	// Config is the image's configuration: what a container runs when the
	// pod does not say.
	Config v1.Config
}

// Resolver finds an image's digest and configuration.
type Resolver interface {
	Resolve(ctx context.Context, ref string) (*Image, error)
}

// Registry resolves images from their registries (go-containerregistry),
// once per reference.
type Registry struct {
	// Insecure allows plain HTTP and unverified TLS (local registries).
	Insecure bool
	// Platform is the platform of an index's image; default linux/amd64.
	Platform *v1.Platform
	// Keychain gives registry credentials; default: the Docker config's.
	Keychain authn.Keychain

	mu    sync.Mutex
	cache map[string]*Image
}

// Resolve resolves ref; a reference by digest is checked against the
// registry too (its configuration is needed).
func (r *Registry) Resolve(ctx context.Context, ref string) (*Image, error) {
	r.mu.Lock()
	img, ok := r.cache[ref]
	r.mu.Unlock()
	if ok {
		return img, nil
	}
	var opts []name.Option
	if r.Insecure {
		opts = append(opts, name.Insecure)
	}
	parsed, err := name.ParseReference(ref, opts...)
	if err != nil {
		return nil, fmt.Errorf("%w %q: %v", ErrImage, ref, err)
	}
	platform := v1.Platform{OS: "linux", Architecture: "amd64"}
	if r.Platform != nil {
		platform = *r.Platform
	}
	keychain := r.Keychain
	if keychain == nil {
		keychain = authn.DefaultKeychain
	}
	ropts := []remote.Option{remote.WithContext(ctx), remote.WithAuthFromKeychain(keychain), remote.WithPlatform(platform)}
	desc, err := remote.Get(parsed, ropts...)
	if err != nil {
		return nil, fmt.Errorf("%w %q: %v", ErrImage, ref, err)
	}
	v1img, err := desc.Image() // the platform's image of an index
	if err != nil {
		return nil, fmt.Errorf("%w %q: %v", ErrImage, ref, err)
	}
	cf, err := v1img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("%w %q: config: %v", ErrImage, ref, err)
	}
	// The digest of what the reference names (an index stays an index:
	// containerd and the guest pick the platform from it).
	img = &Image{Ref: containerdName(parsed.Context()) + "@" + desc.Digest.String(), Config: cf.Config}
	r.mu.Lock()
	if r.cache == nil {
		r.cache = map[string]*Image{}
	}
	r.cache[ref] = img
	r.mu.Unlock()
	return img, nil
}

// containerdName is a repository as containerd normalises it: Docker
// Hub's registry is docker.io, not index.docker.io.
func containerdName(repo name.Repository) string {
	reg := repo.RegistryStr()
	if reg == name.DefaultRegistry {
		reg = "docker.io"
	}
	return reg + "/" + strings.TrimPrefix(repo.RepositoryStr(), "/")
}
