package securemount

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"os/exec"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/cocoon-cc/cocoon/guest/cdh/resource"
)

// Getter fetches KBS resources (after attestation).
type Getter interface {
	GetResource(ctx context.Context, u resource.URI) ([]byte, error)
}

// Unsealer unseals sealed secrets.
type Unsealer interface {
	Unseal(ctx context.Context, secret []byte) ([]byte, error)
}

// Mounter serves SecureMount.
type Mounter struct {
	KBS    Getter
	Sealed Unsealer
}

// randomKeySize is the size of the key made up when none is given (the
// device is then scratch space nobody can reopen), as upstream.
const randomKeySize = 4096

// Mount opens (formatting first for an empty source) the LUKS2 device and
// exposes it at the mount point.
func (m *Mounter) Mount(ctx context.Context, r *Request) error {
	p, err := parse(r)
	if err != nil {
		return err
	}
	key, err := m.key(ctx, p.key)
	if err != nil {
		return err
	}
	defer clear(key)
	if p.sourceType == SourceEmpty {
		if err := luksFormat(ctx, p, key); err != nil {
			return err
		}
	}
	if err := cryptsetup(ctx, key, "luksOpen", "-d", "-", p.devicePath, p.mapperName); err != nil {
		return err
	}
	if err := expose(ctx, p); err != nil {
		// Leave no half-made mapping behind.
		_ = cryptsetup(context.WithoutCancel(ctx), nil, "luksClose", p.mapperName)
		return err
	}
	return nil
}

// key resolves the key reference.
func (m *Mounter) key(ctx context.Context, ref string) ([]byte, error) {
	switch {
	case ref == "":
		k := make([]byte, randomKeySize)
		_, err := rand.Read(k)
		return k, err
	case strings.HasPrefix(ref, "sealed."):
		k, err := m.Sealed.Unseal(ctx, []byte(ref))
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrKey, err)
		}
		return k, nil
	case resource.IsURI(ref):
		u, err := resource.Parse(ref)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
		}
		k, err := m.KBS.GetResource(ctx, u)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrKey, err)
		}
		return k, nil
	case strings.HasPrefix(ref, "file://"):
		k, err := os.ReadFile(strings.TrimPrefix(ref, "file://"))
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrKey, err)
		}
		return k, nil
	}
	return nil, fmt.Errorf("%w: key must start with sealed., kbs:// or file://", ErrInvalid)
}

func luksFormat(ctx context.Context, p *params, key []byte) error {
	// The keys are machine-made (random, or a KBS resource), never
	// passphrases: a slow, memory-hard KDF (argon2id's default takes
	// seconds and up to half the guest's memory) would add nothing.
	args := []string{"--batch-mode", "luksFormat", "--type", "luks2", "--cipher", "aes-xts-plain64",
		"--sector-size", "4096", "--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000"}
	if p.integrity {
		args = append(args, "--integrity", "hmac-sha256", "--integrity-no-wipe", "--integrity-no-journal")
	}
	return cryptsetup(ctx, key, append(args, p.devicePath, "-")...)
}

// expose symlinks the mapped device or mounts its file system.
func expose(ctx context.Context, p *params) error {
	dev := "/dev/mapper/" + p.mapperName
	if p.targetType == TargetDevice {
		if err := os.Symlink(dev, p.mountPoint); err != nil {
			return fmt.Errorf("%w: %w", ErrDevice, err)
		}
		return nil
	}
	if p.sourceType == SourceEmpty {
		if err := run(ctx, nil, "mkfs."+p.fsType, append(append([]string{"-F", "-q"}, p.mkfsOpts...), dev)...); err != nil {
			return err
		}
	}
	if err := unix.Mount(dev, p.mountPoint, p.fsType, unix.MS_NOATIME, ""); err != nil {
		return fmt.Errorf("%w: mount %s at %s: %w", ErrDevice, dev, p.mountPoint, err)
	}
	return nil
}

// cryptsetup runs cryptsetup, giving it key (if any) on stdin.
func cryptsetup(ctx context.Context, key []byte, args ...string) error {
	return run(ctx, key, "cryptsetup", args...)
}

// run runs a tool; stdin (when not nil) is the only way a key is passed.
func run(ctx context.Context, stdin []byte, name string, args ...string) error {
	cmd := exec.CommandContext(ctx, name, args...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%w: %s %s: %w: %s", ErrDevice, name, args[0], err, bytes.TrimSpace(out.Bytes()))
	}
	return nil
}
