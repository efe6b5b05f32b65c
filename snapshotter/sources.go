package snapshotter

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"io"
	"maps"
	"slices"

	contentapi "github.com/containerd/containerd/api/services/content/v1"
	imagesapi "github.com/containerd/containerd/api/services/images/v1"
	"github.com/containerd/containerd/content"
	"github.com/containerd/containerd/content/proxy"
	"github.com/containerd/containerd/images"
	"github.com/containerd/containerd/namespaces"
	"github.com/containerd/containerd/remotes"
	"github.com/containerd/containerd/remotes/docker"
	"github.com/containerd/platforms"
	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/identity"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/cocoon-cc/cocoon/image/store"
)

// ContainerdImages is Images from containerd's image and content
// services.
type ContainerdImages struct {
	conn    *grpc.ClientConn
	images  imagesapi.ImagesClient
	content content.Store
}

// NewContainerdImages connects to containerd's socket at address lazily:
// the snapshotter starts before containerd.
func NewContainerdImages(address string) (*ContainerdImages, error) {
	conn, err := grpc.NewClient("unix://"+address, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, err
	}
	return &ContainerdImages{conn: conn, images: imagesapi.NewImagesClient(conn),
		content: proxy.NewContentStore(contentapi.NewContentClient(conn))}, nil
}

// Close closes the connection.
func (c *ContainerdImages) Close() error { return c.conn.Close() }

// WithChain lists ns's images whose root filesystem (this platform's) is
// the chain chainID, as name@digest (not CRI's records named by image ID).
func (c *ContainerdImages) WithChain(ctx context.Context, ns, chainID string) ([]string, error) {
	ctx = namespaces.WithNamespace(ctx, ns)
	resp, err := c.images.List(ctx, &imagesapi.ListImagesRequest{})
	if err != nil {
		return nil, err
	}
	var refs []string
	for _, img := range resp.Images {
		if digest.Digest(img.Name).Validate() == nil {
			continue // CRI's record of the image by its ID: another name's alias
		}
		diffIDs, err := c.diffIDs(ctx, img)
		if err != nil || identity.ChainID(diffIDs).String() != chainID {
			continue
		}
		refs = append(refs, img.Name+"@"+img.Target.Digest)
	}
	return refs, nil
}

// diffIDs are the layers of an image's root filesystem (this platform's).
func (c *ContainerdImages) diffIDs(ctx context.Context, img *imagesapi.Image) ([]digest.Digest, error) {
	target := ocispec.Descriptor{MediaType: img.Target.MediaType, Digest: digest.Digest(img.Target.Digest), Size: img.Target.Size}
	m, err := images.Manifest(ctx, c.content, target, platforms.Default())
	if err != nil {
		return nil, err // not this platform's, or not all there
	}
	return images.RootFS(ctx, c.content, m.Config)
}

// layerChains are the chain IDs of every layer of ns's images, deepest
// first.
func (c *ContainerdImages) layerChains(ctx context.Context) ([]string, error) {
	resp, err := c.images.List(ctx, &imagesapi.ListImagesRequest{})
	if err != nil {
		return nil, err
	}
	depth := map[string]int{}
	for _, img := range resp.Images {
		diffIDs, err := c.diffIDs(ctx, img)
		if err != nil {
			continue
		}
		for i := range diffIDs {
			depth[identity.ChainID(diffIDs[:i+1]).String()] = i
		}
	}
	chains := slices.Collect(maps.Keys(depth))
	slices.SortFunc(chains, func(a, b string) int { return cmp.Compare(depth[b], depth[a]) })
	return chains, nil
}

// RegistryLayers is Layers from the images' registries: plain HTTP for
// registries on the loopback, HTTPS elsewhere, anonymous.
type RegistryLayers struct {
	resolver remotes.Resolver
}

// NewRegistryLayers returns a RegistryLayers.
func NewRegistryLayers() *RegistryLayers {
	hosts := docker.ConfigureDefaultRegistries(docker.WithPlainHTTP(docker.MatchLocalhost))
	return &RegistryLayers{resolver: docker.NewResolver(docker.ResolverOptions{Hosts: hosts})}
}

// Layers resolves ref (name@digest pins it) to this platform's manifest
// and returns its layers by chain ID and a way to fetch them.
func (r *RegistryLayers) Layers(ctx context.Context, ref string) (map[string]ocispec.Descriptor, func(context.Context, ocispec.Descriptor) (io.ReadCloser, error), error) {
	name, desc, err := r.resolver.Resolve(ctx, ref)
	if err != nil {
		return nil, nil, err
	}
	fetcher, err := r.resolver.Fetcher(ctx, name)
	if err != nil {
		return nil, nil, err
	}
	provider := fetched{fetcher}
	manifest, err := images.Manifest(ctx, provider, desc, platforms.Default())
	if err != nil {
		return nil, nil, err
	}
	diffIDs, err := images.RootFS(ctx, provider, manifest.Config)
	if err != nil {
		return nil, nil, err
	}
	layers, err := chainIDs(manifest.Layers, diffIDs)
	return layers, fetcher.Fetch, err
}

// fetched is a content.Provider over a registry for small blobs
// (manifests, indexes, configs), read whole.
type fetched struct{ f remotes.Fetcher }

// maxMetadata bounds a manifest, index or config read into memory.
const maxMetadata = 4 << 20

func (p fetched) ReaderAt(ctx context.Context, desc ocispec.Descriptor) (content.ReaderAt, error) {
	if desc.Size < 0 || desc.Size > maxMetadata {
		return nil, fmt.Errorf("%s: %d bytes is not a size of image metadata", desc.Digest, desc.Size)
	}
	rc, err := p.f.Fetch(ctx, desc)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	// The verifier stops at desc.Size bytes.
	b, err := io.ReadAll(store.NewVerifier(rc, desc.Digest, desc.Size))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", desc.Digest, err)
	}
	return readerAt{bytes.NewReader(b)}, nil
}

type readerAt struct{ *bytes.Reader }

func (readerAt) Close() error { return nil }
