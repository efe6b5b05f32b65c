package nodeinstall

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// Guest files an image may hold, at its root.
const (
	GuestKernel   = "vmlinuz"
	GuestInitrd   = "initramfs.cpio.gz"
	GuestSNPFirm  = "OVMF.amdsev.fd"
	GuestTDXFirm  = "TDVF.fd"
	maxGuestFile  = 1 << 30
	guestComplete = ".complete"
)

var guestFiles = map[string]bool{GuestKernel: true, GuestInitrd: true, GuestSNPFirm: true, GuestTDXFirm: true}

// ErrGuestImage is a guest image the installer refuses.
var ErrGuestImage = errors.New("guest image")

// GuestDir is where a guest of this digest (sha256:HEX) is installed.
func GuestDir(installDir, digest string) string {
	return filepath.Join(installDir, "guest", strings.TrimPrefix(digest, "sha256:"))
}

// PullGuest fetches the guest image ref (pinned by digest) into
// GuestDir, unless it is there already, and returns its digest.
func PullGuest(ctx context.Context, installDir, ref string, plainHTTP bool) (string, error) {
	var opts []name.Option
	if plainHTTP {
		opts = append(opts, name.Insecure)
	}
	d, err := name.NewDigest(ref, opts...)
	if err != nil {
		return "", fmt.Errorf("%w: %q is not a reference by digest: %v", ErrGuestImage, ref, err)
	}
	dir := GuestDir(installDir, d.DigestStr())
	if _, err := os.Stat(filepath.Join(dir, guestComplete)); err == nil {
		return d.DigestStr(), nil
	}
	img, err := remote.Image(d, remote.WithContext(ctx))
	if err != nil {
		return "", fmt.Errorf("pull %s: %w", ref, err)
	}
	layers, err := img.Layers()
	if err != nil {
		return "", fmt.Errorf("pull %s: %w", ref, err)
	}
	tmp := dir + ".tmp"
	os.RemoveAll(tmp)
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	for _, l := range layers {
		rc, err := l.Uncompressed()
		if err != nil {
			return "", fmt.Errorf("pull %s: %w", ref, err)
		}
		err = extractGuest(rc, tmp)
		rc.Close()
		if err != nil {
			return "", err
		}
	}
	for _, f := range []string{GuestKernel, GuestInitrd} {
		if _, err := os.Stat(filepath.Join(tmp, f)); err != nil {
			return "", fmt.Errorf("%w: %s has no %s", ErrGuestImage, ref, f)
		}
	}
	if err := os.WriteFile(filepath.Join(tmp, guestComplete), []byte(ref+"\n"), 0o644); err != nil {
		return "", err
	}
	os.RemoveAll(dir)
	return d.DigestStr(), os.Rename(tmp, dir)
}

// extractGuest writes the guest files of a layer (a tar stream) into dir:
// regular files with known names at the root, nothing else.
func extractGuest(r io.Reader, dir string) error {
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("%w: %v", ErrGuestImage, err)
		}
		base := strings.TrimPrefix(h.Name, "./")
		if h.Typeflag == tar.TypeDir && (base == "" || base == ".") {
			continue
		}
		if !guestFiles[base] || h.Typeflag != tar.TypeReg {
			return fmt.Errorf("%w: unexpected entry %q (the layer holds %s, %s and firmware only)", ErrGuestImage, h.Name, GuestKernel, GuestInitrd)
		}
		if h.Size > maxGuestFile {
			return fmt.Errorf("%w: %s is %d bytes", ErrGuestImage, base, h.Size)
		}
		f, err := os.OpenFile(filepath.Join(dir, base), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
		if err != nil {
			return fmt.Errorf("%w: %s: %v", ErrGuestImage, base, err)
		}
		_, err = io.Copy(f, io.LimitReader(tr, maxGuestFile))
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
	}
}

// RemoveUnusedGuests removes the installed guests other than the one of
// digest keep that no running process (a VM) names on its command line.
func RemoveUnusedGuests(installDir, keep string) error {
	dirs, _ := filepath.Glob(filepath.Join(installDir, "guest", "*"))
	inUse := processArgs()
	var errs []error
	for _, d := range dirs {
		// Command lines name host paths; installDir may be seen elsewhere.
		hostPath := "/guest/" + filepath.Base(d) + "/"
		if filepath.Base(d) == strings.TrimPrefix(keep, "sha256:") || strings.Contains(inUse, hostPath) {
			continue
		}
		errs = append(errs, os.RemoveAll(d))
	}
	return errors.Join(errs...)
}

// processArgs is every process's command line, NULs as spaces.
func processArgs() string {
	var b strings.Builder
	files, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, f := range files {
		if c, err := os.ReadFile(f); err == nil {
			b.WriteString(strings.ReplaceAll(string(c), "\x00", " "))
			b.WriteByte('\n')
		}
	}
	return b.String()
}
