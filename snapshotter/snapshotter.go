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
	"fmt"
	"regexp"

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
	images *regexp.Regexp
}

// New wraps sn; images selects the image references pulled in the guest
// (nil: every image CRI pulls).
func New(sn snapshots.Snapshotter, images *regexp.Regexp) *Snapshotter {
	return &Snapshotter{Snapshotter: sn, images: images}
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
	if target == "" || image == "" || (s.images != nil && !s.images.MatchString(image)) {
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
