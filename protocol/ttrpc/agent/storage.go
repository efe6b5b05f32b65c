package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"strings"
)

// Kata's guest-pull storage: the runtime asks the agent to pull a
// container's image in the guest with one Storage of driver
// image_guest_pull, whose source is the image reference, whose fstype is
// "overlay", whose mount point is the container's rootfs in the guest and
// whose driver option "image_guest_pull=<json>" carries the image's
// metadata: the container's annotations. genpolicy's rules allow exactly
// this shape (no options, fs_group null, shared false).

// Guest-pull storage's names.
const (
	StorageDriverImageGuestPull = "image_guest_pull"
	guestPullFSType             = "overlay"
	guestPullOption             = StorageDriverImageGuestPull + "="
	// ContainersDir is where Kata's runtime puts containers' rootfs in the
	// guest.
	ContainersDir = "/run/kata-containers"
)

// ErrStorage marks a storage that is not Kata's guest-pull storage.
var ErrStorage = errors.New("invalid image_guest_pull storage")

// GuestRootfs is a container's rootfs in the guest, as Kata's runtime
// names it (the OCI spec's Root.Path and the storage's mount point).
func GuestRootfs(containerID string) string {
	return path.Join(ContainersDir, containerID, "rootfs")
}

// ImagePull is the driver option's JSON (Kata's ImagePullVolume).
type ImagePull struct {
	Metadata map[string]string `json:"metadata"`
}

// GuestPullStorage is the storage Kata's runtime sends to pull image in
// the guest as the rootfs of container id; metadata are the container's
// annotations.
func GuestPullStorage(id, image string, metadata map[string]string) (*Storage, error) {
	if metadata == nil {
		metadata = map[string]string{}
	}
	b, err := json.Marshal(ImagePull{Metadata: metadata})
	if err != nil {
		return nil, err
	}
	return &Storage{Driver: StorageDriverImageGuestPull, DriverOptions: []string{guestPullOption + string(b)},
		Source: image, Fstype: guestPullFSType, Options: []string{}, MountPoint: GuestRootfs(id)}, nil
}

// GuestPull checks that s is container id's guest-pull storage and returns
// the image pull's metadata.
func (s *Storage) GuestPull(id string) (*ImagePull, error) {
	switch {
	case s.GetDriver() != StorageDriverImageGuestPull:
		return nil, fmt.Errorf("%w: driver %q", ErrStorage, s.GetDriver())
	case s.Source == "":
		return nil, fmt.Errorf("%w: no image", ErrStorage)
	case s.Fstype != guestPullFSType:
		return nil, fmt.Errorf("%w: fstype %q, want %q", ErrStorage, s.Fstype, guestPullFSType)
	case s.MountPoint != GuestRootfs(id):
		return nil, fmt.Errorf("%w: mount point %q, want %q", ErrStorage, s.MountPoint, GuestRootfs(id))
	case len(s.Options) > 0 || s.FsGroup != nil || s.Shared:
		return nil, fmt.Errorf("%w: options, fs_group or shared set", ErrStorage)
	}
	var found *ImagePull
	for _, o := range s.DriverOptions {
		v, ok := strings.CutPrefix(o, guestPullOption)
		if !ok {
			continue
		}
		if found != nil {
			return nil, fmt.Errorf("%w: two %s driver options", ErrStorage, StorageDriverImageGuestPull)
		}
		found = &ImagePull{}
		if err := json.Unmarshal([]byte(v), found); err != nil {
			return nil, fmt.Errorf("%w: driver option: %v", ErrStorage, err)
		}
	}
	if found == nil {
		return nil, fmt.Errorf("%w: no %s driver option", ErrStorage, StorageDriverImageGuestPull)
	}
	return found, nil
}
