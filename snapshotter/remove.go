package snapshotter

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// InUse says whether a mount in mountinfo (a /proc/PID/mountinfo) uses a
// path under root: an overlay with a layer there, or a bind mount of one
// (its root within the filesystem holding root).
func InUse(mountinfo []byte, root string) bool {
	root = filepath.Clean(root)
	type mnt struct{ dev, fsRoot, point, opts string }
	var mounts []mnt
	for _, line := range strings.Split(string(mountinfo), "\n") {
		pre, post, ok := strings.Cut(line, " - ")
		f := strings.Fields(pre)
		if !ok || len(f) < 5 {
			continue
		}
		m := mnt{dev: f[2], fsRoot: unescape(f[3]), point: unescape(f[4]), opts: unescape(post)}
		if strings.Contains(m.opts, root+"/") {
			return true // overlay lowerdir, upperdir or workdir
		}
		mounts = append(mounts, m)
	}
	// The filesystem root lives on: the mount with the longest mount point
	// above it (mounted last, when several).
	var on *mnt
	for i, m := range mounts {
		if under(root, m.point) && (on == nil || len(m.point) >= len(on.point)) {
			on = &mounts[i]
		}
	}
	if on == nil {
		return false
	}
	rel := filepath.Join(on.fsRoot, strings.TrimPrefix(root, on.point))
	for _, m := range mounts {
		if m.dev == on.dev && m.point != on.point && under(m.fsRoot, rel) && m.fsRoot != rel {
			return true
		}
	}
	return false
}

// under says whether p is dir or below it.
func under(p, dir string) bool {
	return p == dir || dir == "/" || strings.HasPrefix(p, dir+"/")
}

// unescape undoes mountinfo's octal escapes of space, tab, newline and
// backslash.
func unescape(s string) string {
	return strings.NewReplacer(`\040`, " ", `\011`, "\t", `\012`, "\n", `\134`, `\`).Replace(s)
}

// RemoveUnused removes root, a stopped snapshotter's snapshots, once no
// mount of this mount namespace uses them: containers whose root
// filesystem was made from them keep it until they are gone. It checks
// every interval until ctx ends.
func RemoveUnused(ctx context.Context, root string, interval time.Duration) error {
	for {
		b, err := os.ReadFile("/proc/self/mountinfo")
		if err != nil {
			return err
		}
		if !InUse(b, root) {
			if err := os.RemoveAll(root); err != nil {
				return fmt.Errorf("remove %s: %w", root, err)
			}
			return nil
		}
		select {
		case <-ctx.Done():
			return errors.Join(fmt.Errorf("%s still in use", root), ctx.Err())
		case <-time.After(interval):
		}
	}
}
