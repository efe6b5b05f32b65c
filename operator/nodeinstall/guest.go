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

// SNPCPUModel is the vCPU model of qemu-snp VMs (QEMU's -cpu).
const SNPCPUModel = "EPYC-v4"

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
	d, err := guestDigest(ref, plainHTTP)
	if err != nil {
		return "", err
	}
	dir := GuestDir(installDir, d.DigestStr())
	if _, err := os.Stat(filepath.Join(dir, guestComplete)); err == nil {
		return d.DigestStr(), nil
	}
	tmp := dir + ".tmp"
	os.RemoveAll(tmp)
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	if _, err := WalkGuestImage(ctx, ref, plainHTTP, func(name string, r io.Reader) error { return writeGuestFile(tmp, name, r) }); err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(tmp, guestComplete), []byte(ref+"\n"), 0o644); err != nil {
		return "", err
	}
	os.RemoveAll(dir)
	return d.DigestStr(), os.Rename(tmp, dir)
}

func guestDigest(ref string, plainHTTP bool) (name.Digest, error) {
	var opts []name.Option
	if plainHTTP {
		opts = append(opts, name.Insecure)
	}
	d, err := name.NewDigest(ref, opts...)
	if err != nil {
		return name.Digest{}, fmt.Errorf("%w: %q is not a reference by digest: %v", ErrGuestImage, ref, err)
	}
	return d, nil
}

// WalkGuestImage pulls the guest image ref (pinned by digest) and calls fn
// with each of its files, streamed from the registry: the installer writes
// them, the operator measures them. It returns the image's digest once
// the kernel and initrd were seen.
func WalkGuestImage(ctx context.Context, ref string, plainHTTP bool, fn func(name string, r io.Reader) error) (string, error) {
	d, err := guestDigest(ref, plainHTTP)
	if err != nil {
		return "", err
	}
	img, err := remote.Image(d, remote.WithContext(ctx))
	if err != nil {
		return "", fmt.Errorf("pull %s: %w", ref, err)
	}
	layers, err := img.Layers()
	if err != nil {
		return "", fmt.Errorf("pull %s: %w", ref, err)
	}
	seen := map[string]bool{}
	for _, l := range layers {
		rc, err := l.Uncompressed()
		if err != nil {
			return "", fmt.Errorf("pull %s: %w", ref, err)
		}
		err = walkGuest(rc, func(name string, r io.Reader) error { seen[name] = true; return fn(name, r) })
		rc.Close()
		if err != nil {
			return "", err
		}
	}
	for _, f := range []string{GuestKernel, GuestInitrd} {
		if !seen[f] {
			return "", fmt.Errorf("%w: %s has no %s", ErrGuestImage, ref, f)
		}
	}
	return d.DigestStr(), nil
}

// walkGuest calls fn for the guest files of a layer (a tar stream):
// regular files with known names at the root, nothing else.
func walkGuest(r io.Reader, fn func(name string, r io.Reader) error) error {
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
		if err := fn(base, io.LimitReader(tr, maxGuestFile)); err != nil {
			return err
		}
	}
}

func writeGuestFile(dir, base string, r io.Reader) error {
	f, err := os.OpenFile(filepath.Join(dir, base), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
	if err != nil {
		return fmt.Errorf("%w: %s: %v", ErrGuestImage, base, err)
	}
	_, err = io.Copy(f, r)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("%w: %s: %v", ErrGuestImage, base, err)
	}
	return nil
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

// processArgs is every process's command line, its arguments joined by
// spaces.
func processArgs() string {
	var b strings.Builder
	for _, args := range processes() {
		b.WriteString(strings.Join(args, " "))
		b.WriteByte('\n')
	}
	return b.String()
}
