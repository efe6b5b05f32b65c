package snapshotter

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/containerd/containerd/archive"
	"github.com/containerd/containerd/archive/compression"
	"github.com/containerd/containerd/mount"
	"github.com/containerd/containerd/snapshots"
	"github.com/containerd/log"
	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/identity"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/cocoon-cc/cocoon/image/store"
)

// containerd names a layer snapshot by its chain ID alone, in a namespace:
// the layers an image pulled in the guest left empty (placeholders) are the
// layers of every later image that shares them. An image unpacked on the
// host after such an image finds them there and unpacks only what follows
// (or nothing, when it has no layer of its own), so its root filesystem
// would lack the shared layers. Hydration gives a placeholder its layer's
// real content, fetched from the registry and checked against its digests,
// before an image unpacked on the host builds on it: when such an image's
// unpack prepares a layer over placeholders, and when a container's root
// filesystem is prepared over them for an image containerd says is
// unpacked on the host. The guest image then shares real layers, as when
// the host image came first.

// labelHydrated marks a placeholder that holds its layer's content.
const labelHydrated = "io.cocoon.snapshot/hydrated"

// Images tells which images containerd has whose root filesystem is a
// chain of layers.
type Images interface {
	// WithChain lists the references (name@digest) of namespace ns's
	// images whose root filesystem's chain ID is chainID.
	WithChain(ctx context.Context, ns, chainID string) ([]string, error)
}

// Layers finds an image's layers in its registry.
type Layers interface {
	// Layers returns the image's layer descriptors by chain ID, and opens
	// one layer's blob.
	Layers(ctx context.Context, ref string) (map[string]ocispec.Descriptor, func(context.Context, ocispec.Descriptor) (io.ReadCloser, error), error)
}

// ErrHydrate wraps a failure to give placeholders their content.
var ErrHydrate = errors.New("cannot fetch the layers an image pulled in the guest left empty")

// placeholders lists the placeholders in the chain from parent down that
// are still empty.
func (s *Snapshotter) placeholders(ctx context.Context, parent string) ([]snapshots.Info, error) {
	var empty []snapshots.Info
	for parent != "" {
		info, err := s.Snapshotter.Stat(ctx, parent)
		if err != nil {
			return nil, err
		}
		if _, ok := info.Labels[labelGuestPull]; ok && info.Labels[labelHydrated] == "" {
			empty = append(empty, info)
		}
		parent = info.Parent
	}
	return empty, nil
}

// hydrateForContainer hydrates the placeholders under a container's root
// filesystem (key, over parent) when an image unpacked on the host has
// that chain; a guest image's container keeps them empty. A failure is
// logged, not returned: the container may be a guest image's of the same
// chain, which needs nothing from the host.
func (s *Snapshotter) hydrateForContainer(ctx context.Context, key, parent string) {
	if err := s.hydrateChain(ctx, key, parent); err != nil {
		log.G(ctx).WithError(err).WithField("parent", parent).Warn("root filesystem prepared over layers left empty for an image pulled in the guest")
	}
}

func (s *Snapshotter) hydrateChain(ctx context.Context, key, parent string) error {
	if s.images == nil || s.hydrator.Images == nil || parent == "" {
		return nil
	}
	empty, err := s.placeholders(ctx, parent)
	if err != nil || len(empty) == 0 {
		return err
	}
	top, err := s.Snapshotter.Stat(ctx, parent)
	if err != nil {
		return err
	}
	refs, err := s.hydrator.Images.WithChain(ctx, namespaceOf(key), chainIDOf(top))
	if err != nil {
		return fmt.Errorf("%w: %w", ErrHydrate, err)
	}
	for _, ref := range refs {
		if !s.images.MatchString(ref) {
			return s.hydrate(ctx, ref, empty)
		}
	}
	return nil
}

// namespaceOf is the namespace of a backend key (containerd's metadata
// names active snapshots "<namespace>/<n>/<key>").
func namespaceOf(key string) string {
	ns, _, _ := strings.Cut(key, "/")
	return ns
}

// chainIDOf is a committed layer snapshot's chain ID: its target label
// (placeholders), else the last part of its backend name.
func chainIDOf(info snapshots.Info) string {
	if t := info.Labels[labelTargetRef]; t != "" {
		return t
	}
	return info.Name[strings.LastIndexByte(info.Name, '/')+1:]
}

// hydrate fetches image ref's layers for the placeholders empty and
// unpacks each into its snapshot.
func (s *Snapshotter) hydrate(ctx context.Context, ref string, empty []snapshots.Info) error {
	s.hydrating.Lock()
	defer s.hydrating.Unlock()
	layers, open, err := s.hydrator.Layers.Layers(ctx, ref)
	if err != nil {
		return fmt.Errorf("%w: %s: %w", ErrHydrate, ref, err)
	}
	for _, p := range empty {
		if cur, err := s.Snapshotter.Stat(ctx, p.Name); err == nil && cur.Labels[labelHydrated] != "" {
			continue // done meanwhile
		}
		chainID := chainIDOf(p)
		desc, ok := layers[chainID]
		if !ok {
			return fmt.Errorf("%w: %s has no layer of chain %s", ErrHydrate, ref, chainID)
		}
		if err := s.fill(ctx, p.Name, desc, open); err != nil {
			return fmt.Errorf("%w: %s layer %s: %w", ErrHydrate, ref, desc.Digest, err)
		}
		labels := map[string]string{labelHydrated: ref}
		if _, err := s.Snapshotter.Update(ctx, snapshots.Info{Name: p.Name, Labels: labels}, "labels."+labelHydrated); err != nil {
			return err
		}
		log.G(ctx).WithField("image", ref).WithField("layer", desc.Digest).Info("layer an image pulled in the guest left empty now unpacked for an image on the host")
	}
	return nil
}

// fill unpacks layer desc into committed snapshot name's directory: into a
// new directory beside it, swapped in once the layer's digests checked.
func (s *Snapshotter) fill(ctx context.Context, name string, desc ocispec.Descriptor, open func(context.Context, ocispec.Descriptor) (io.ReadCloser, error)) error {
	dir, err := s.dirOf(ctx, name)
	if err != nil {
		return err
	}
	tmp := dir + ".hydrate"
	if err := os.RemoveAll(tmp); err != nil {
		return err
	}
	if err := os.Mkdir(tmp, 0o755); err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	if err := unpackLayer(ctx, tmp, desc, open); err != nil {
		return err
	}
	old := dir + ".empty"
	if err := os.Rename(dir, old); err != nil {
		return err
	}
	if err := os.Rename(tmp, dir); err != nil {
		os.Rename(old, dir)
		return err
	}
	return os.RemoveAll(old)
}

// unpackLayer unpacks a layer blob into dir, overlay's way (whiteouts as
// character devices), checking its digest and, uncompressed, its diff ID
// (the annotation CRI's pull left on it, else the chain's).
func unpackLayer(ctx context.Context, dir string, desc ocispec.Descriptor, open func(context.Context, ocispec.Descriptor) (io.ReadCloser, error)) error {
	rc, err := open(ctx, desc)
	if err != nil {
		return err
	}
	defer rc.Close()
	blob := store.NewVerifier(rc, desc.Digest, -1)
	plain, err := compression.DecompressStream(blob)
	if err != nil {
		return err
	}
	defer plain.Close()
	diff := digest.SHA256.Digester()
	r := io.TeeReader(plain, diff.Hash())
	if _, err := archive.Apply(ctx, dir, r, archive.WithConvertWhiteout(archive.OverlayConvertWhiteout)); err != nil {
		return err
	}
	if _, err := io.Copy(io.Discard, r); err != nil {
		return err
	}
	// To its end: the verifier answers EOF only when the digest matched.
	if _, err := io.Copy(io.Discard, blob); err != nil {
		return err
	}
	if want := desc.Annotations[annotationDiffID]; want != "" && want != diff.Digest().String() {
		return fmt.Errorf("layer's content %s does not match its diff ID %s", diff.Digest(), want)
	}
	return nil
}

// annotationDiffID carries a layer descriptor's diff ID from Layers to
// unpackLayer (Cocoon's, never sent anywhere).
const annotationDiffID = "io.cocoon.layer.diff-id"

// dirOf is a committed overlay snapshot's directory: the lower directory
// a view over it mounts first.
func (s *Snapshotter) dirOf(ctx context.Context, name string) (string, error) {
	key := "hydrate-view-" + name
	ms, err := s.Snapshotter.View(ctx, key, name)
	if err != nil {
		return "", err
	}
	defer s.Snapshotter.Remove(context.WithoutCancel(ctx), key)
	return firstLower(ms)
}

// firstLower is the topmost lower directory of a view's mounts: a bind
// mount's source, or an overlay's first lowerdir.
func firstLower(ms []mount.Mount) (string, error) {
	if len(ms) == 1 {
		m := ms[0]
		if m.Type == "bind" {
			return filepath.Clean(m.Source), nil
		}
		for _, o := range m.Options {
			if l, ok := strings.CutPrefix(o, "lowerdir="); ok {
				first, _, _ := strings.Cut(l, ":")
				return filepath.Clean(first), nil
			}
		}
	}
	return "", fmt.Errorf("a view's mounts %v name no lower directory", ms)
}

// chainIDs maps each layer of an image to the chain ID of the layers up to
// it, from the image config's diff IDs, noting the diff ID on the layer.
func chainIDs(layers []ocispec.Descriptor, diffIDs []digest.Digest) (map[string]ocispec.Descriptor, error) {
	if len(layers) != len(diffIDs) {
		return nil, fmt.Errorf("%d layers but %d diff IDs", len(layers), len(diffIDs))
	}
	out := map[string]ocispec.Descriptor{}
	for i, l := range layers {
		l.Annotations = map[string]string{annotationDiffID: diffIDs[i].String()}
		out[identity.ChainID(diffIDs[:i+1]).String()] = l
	}
	return out, nil
}
