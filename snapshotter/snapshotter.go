// Package snapshotter is cocoon-snapshotter: a containerd proxy snapshotter
// for hosts whose pods pull their images in the guest. containerd 1.6's CRI
// plugin pulls and unpacks every image on the host before it creates a
// container; through this snapshotter the layers of the images it selects
// are never downloaded or unpacked on the host (it answers containerd's
// remote-snapshotter request with an empty snapshot), so encrypted layers,
// which the host cannot decrypt, pass and plain ones stay off its disk.
// Everything else is containerd's overlay snapshotter.
package snapshotter

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sync"

	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/mount"
	"github.com/containerd/containerd/snapshots"
	"github.com/containerd/log"
)

// Labels containerd's CRI plugin sets on a layer snapshot it prepares
// (with disable_snapshot_annotations = false).
const (
	labelTargetRef = "containerd.io/snapshot.ref"
	labelImageRef  = "containerd.io/snapshot/cri.image-ref"
	labelLayer     = "containerd.io/snapshot/cri.layer-digest"
	// labelGuestPull marks the empty snapshots this package made.
	labelGuestPull = "io.cocoon.snapshot/guest-pull"
)

// Snapshotter wraps a snapshotter, typically overlay.
type Snapshotter struct {
	snapshots.Snapshotter
	images    *regexp.Regexp
	hydrator  Hydrator
	hydrating sync.Mutex
}

// Hydrator is where the snapshotter finds the content of layers an image
// pulled in the guest left empty, when an image unpacked on the host needs
// them (hydrate.go). Without Layers such an unpack is refused
// (ErrSharedWithGuestPull); without Images a container of an image made
// only of such layers gets them empty.
type Hydrator struct {
	Images Images
	Layers Layers
}

// New wraps sn; images selects the image references pulled in the guest
// (nil: every image CRI pulls).
func New(sn snapshots.Snapshotter, images *regexp.Regexp, h Hydrator) *Snapshotter {
	return &Snapshotter{Snapshotter: sn, images: images, hydrator: h}
}

// Prepare answers a CRI layer unpack of a selected image with an empty,
// committed snapshot under the target name and ErrAlreadyExists, which
// tells containerd the layer is there already: it neither fetches nor
// applies it.
func (s *Snapshotter) Prepare(ctx context.Context, key, parent string, opts ...snapshots.Opt) ([]mount.Mount, error) {
	var info snapshots.Info
	for _, o := range opts {
		if err := o(&info); err != nil {
			return nil, err
		}
	}
	target, image := info.Labels[labelTargetRef], info.Labels[labelImageRef]
	if target == "" || image == "" {
		s.hydrateForContainer(ctx, key, parent)
		return s.Snapshotter.Prepare(ctx, key, parent, opts...)
	}
	if s.images != nil && !s.images.MatchString(image) {
		if err := s.realParents(ctx, parent, image); err != nil {
			return nil, err
		}
		return s.Snapshotter.Prepare(ctx, key, parent, opts...)
	}
	if _, err := s.Snapshotter.Prepare(ctx, key, parent, opts...); err != nil {
		return nil, err
	}
	labels := map[string]string{labelGuestPull: image}
	if err := s.Snapshotter.Commit(ctx, target, key, append(opts, snapshots.WithLabels(labels))...); err != nil {
		s.Snapshotter.Remove(ctx, key)
		if errdefs.IsAlreadyExists(err) {
			return nil, fmt.Errorf("layer %s: %w", target, errdefs.ErrAlreadyExists)
		}
		return nil, err
	}
	log.G(ctx).WithField("image", image).WithField("layer", info.Labels[labelLayer]).Debug("layer left to the guest")
	return nil, fmt.Errorf("layer %s of %s is pulled in the guest: %w", info.Labels[labelLayer], image, errdefs.ErrAlreadyExists)
}

// View is Prepare's read-only twin: a view of an image unpacked on the
// host gets the layers it shares with an image pulled in the guest.
func (s *Snapshotter) View(ctx context.Context, key, parent string, opts ...snapshots.Opt) ([]mount.Mount, error) {
	s.hydrateForContainer(ctx, key, parent)
	return s.Snapshotter.View(ctx, key, parent, opts...)
}

// ErrSharedWithGuestPull: a layer of an image unpacked on the host would
// be unpacked over layers left empty for an image pulled in the guest,
// whose content the snapshotter could not fetch. containerd names a layer
// snapshot by its chain ID alone, so it took those empty placeholders for
// the shared layers, which were never fetched.
var ErrSharedWithGuestPull = errors.New("layers shared with an image pulled in the guest")

// realParents gives a host unpack whose parent chain holds guest-pull
// placeholders their content, or refuses it: the layer would land on an
// empty root filesystem.
func (s *Snapshotter) realParents(ctx context.Context, parent, image string) error {
	empty, err := s.placeholders(ctx, parent)
	if err != nil || len(empty) == 0 {
		return err
	}
	if s.hydrator.Layers != nil {
		err = s.hydrate(ctx, image, empty)
	}
	if err != nil || s.hydrator.Layers == nil {
		return fmt.Errorf("%w: %s would be unpacked over layer %s, left empty for %s (%v): remove that image (crictl rmi) and pull %s first, or let --images select both: %w",
			ErrSharedWithGuestPull, image, empty[0].Labels[labelTargetRef], empty[0].Labels[labelGuestPull], err, image, errdefs.ErrFailedPrecondition)
	}
	return nil
}

// PluginName is the name containerd knows the snapshotter by
// ([proxy_plugins.cocoon]).
const PluginName = "cocoon"

// ImageFSPath is where containerd's CRI plugin (1.6 and later) says the
// image filesystem of snapshotter PluginName is: <containerd root>/
// io.containerd.snapshotter.v1.cocoon. It answers ImageFsInfo with that
// path, and the kubelet's eviction manager reads the filesystem holding it,
// so it must exist.
func ImageFSPath(containerdRoot string) string {
	return filepath.Join(containerdRoot, "io.containerd.snapshotter.v1."+PluginName)
}

// LinkImageFS makes ImageFSPath(containerdRoot) name root, the directory
// the snapshots live in: nothing to do when they are the same, else a
// symbolic link to root (the kubelet then measures root's filesystem). A
// path that is already there and is something else is left as it is.
func LinkImageFS(containerdRoot, root string) error {
	p := ImageFSPath(containerdRoot)
	abs, err := filepath.Abs(root)
	if err != nil {
		return err
	}
	if filepath.Clean(p) == abs {
		return os.MkdirAll(p, 0o700)
	}
	if err := os.MkdirAll(containerdRoot, 0o711); err != nil {
		return err
	}
	if err := os.Symlink(abs, p); err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	return nil
}
