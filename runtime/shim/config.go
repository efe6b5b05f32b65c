package shim

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/cocoon-cc/cocoon/initdata"
	"github.com/cocoon-cc/cocoon/runtime/sandbox"
)

// DefaultConfigPath is read when neither the runtime options' ConfigPath
// nor $COCOON_SHIM_CONFIG names a file.
const DefaultConfigPath = "/etc/cocoon/containerd-shim-coco-v2.toml"

// AnnotationInitdata carries a pod's initdata, as in Kata/CoCo: the
// initdata TOML, gzip-compressed, base64-encoded (plain TOML in base64 is
// accepted too).
const AnnotationInitdata = "io.katacontainers.config.hypervisor.cc_init_data"

// defaultMemoryMiB is a VM's own memory: the guest's kernel, agent and the
// image layers it pulls, before any container's limit. The initramfs
// unpacks to ~100 MB of it (the Go guest components): at 256 MiB the
// unpacking failed.
const defaultMemoryMiB = 384

// ErrConfig is wrapped by every configuration and annotation error.
var ErrConfig = errors.New("coco shim configuration")

// Config is the shim's TOML configuration.
type Config struct {
	Sandbox struct {
		// Backend is "local" or "qemu".
		Backend string `toml:"backend"`
		// StartTimeout bounds a sandbox's boot until its agent answers.
		StartTimeout duration `toml:"start_timeout"`
		// MemoryMiB and VCPUs are a VM's own size (default 384 MiB, 1),
		// to which its containers' limits are added.
		MemoryMiB int `toml:"memory_mib"`
		VCPUs     int `toml:"vcpus"`
		// MaxMemoryMiB and MaxVCPUs bound a VM's size (default: the
		// host's memory and CPUs).
		MaxMemoryMiB int `toml:"max_memory_mib"`
		MaxVCPUs     int `toml:"max_vcpus"`
		// EmptyDirMode is where a VM pod's disk-backed emptyDir volumes
		// live: "block-encrypted" (default: a scratch disk encrypted in
		// the guest) or "local" (a guest directory, in guest memory).
		EmptyDirMode string `toml:"emptydir_mode"`
		// EmptyDirSizeMiB is a scratch disk's size (sparse).
		EmptyDirSizeMiB int `toml:"emptydir_size_mib"`
	} `toml:"sandbox"`
	// Backends' own sections ([local], [qemu]) are decoded by their
	// factories.
	md  toml.MetaData
	raw map[string]toml.Primitive
}

type duration struct{ time.Duration }

func (d *duration) UnmarshalText(b []byte) error {
	var err error
	d.Duration, err = time.ParseDuration(string(b))
	return err
}

// LoadConfig reads the configuration at path; a missing default file
// gives the defaults (the local backend).
func LoadConfig(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) && path == DefaultConfigPath {
		b, err = nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrConfig, err)
	}
	return ParseConfig(b)
}

// ParseConfig parses the TOML text of a configuration.
func ParseConfig(b []byte) (*Config, error) {
	var c Config
	var raw map[string]toml.Primitive
	md, err := toml.Decode(string(b), &raw)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrConfig, err)
	}
	if p, ok := raw["sandbox"]; ok {
		if err := md.PrimitiveDecode(p, &c.Sandbox); err != nil {
			return nil, fmt.Errorf("%w: [sandbox]: %v", ErrConfig, err)
		}
	}
	if c.Sandbox.Backend == "" {
		c.Sandbox.Backend = "local"
	}
	if c.Sandbox.MemoryMiB <= 0 {
		c.Sandbox.MemoryMiB = defaultMemoryMiB
	}
	if c.Sandbox.VCPUs <= 0 {
		c.Sandbox.VCPUs = 1
	}
	if c.Sandbox.MaxMemoryMiB < 0 || c.Sandbox.MaxVCPUs < 0 {
		return nil, fmt.Errorf("%w: [sandbox] max_memory_mib and max_vcpus cannot be negative", ErrConfig)
	}
	switch c.Sandbox.EmptyDirMode {
	case "":
		c.Sandbox.EmptyDirMode = EmptyDirBlockEncrypted
	case EmptyDirBlockEncrypted, EmptyDirGuestLocal:
	default:
		return nil, fmt.Errorf("%w: [sandbox] emptydir_mode %q (want %s or %s)", ErrConfig, c.Sandbox.EmptyDirMode,
			EmptyDirBlockEncrypted, EmptyDirGuestLocal)
	}
	if c.Sandbox.EmptyDirSizeMiB < 0 {
		return nil, fmt.Errorf("%w: [sandbox] emptydir_size_mib cannot be negative", ErrConfig)
	}
	if c.Sandbox.EmptyDirSizeMiB == 0 {
		c.Sandbox.EmptyDirSizeMiB = defaultEmptyDirMiB
	}
	if c.Sandbox.StartTimeout.Duration == 0 {
		c.Sandbox.StartTimeout.Duration = 60 * time.Second
	}
	c.md, c.raw = md, raw
	return &c, nil
}

// Decode decodes the backend section name (e.g. [qemu]) into v; a missing
// section leaves v as it is.
func (c *Config) Decode(name string, v any) error {
	p, ok := c.raw[name]
	if !ok {
		return nil
	}
	if err := c.md.PrimitiveDecode(p, v); err != nil {
		return fmt.Errorf("%w: [%s]: %v", ErrConfig, name, err)
	}
	return nil
}

// Factory creates a backend's sandbox from the configuration.
type Factory func(ctx context.Context, cfg sandbox.Config, c *Config) (sandbox.Sandbox, error)

// DecodeInitdata reads the initdata annotation and checks the document.
func DecodeInitdata(value string) ([]byte, error) {
	if value == "" {
		return nil, nil
	}
	raw, err := base64.StdEncoding.DecodeString(value)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: not base64: %v", ErrConfig, AnnotationInitdata, err)
	}
	if bytes.HasPrefix(raw, []byte{0x1f, 0x8b}) {
		zr, err := gzip.NewReader(bytes.NewReader(raw))
		if err != nil {
			return nil, fmt.Errorf("%w: %s: %v", ErrConfig, AnnotationInitdata, err)
		}
		raw, err = io.ReadAll(io.LimitReader(zr, initdata.MaxSize+1))
		if err != nil {
			return nil, fmt.Errorf("%w: %s: %v", ErrConfig, AnnotationInitdata, err)
		}
	}
	if _, err := initdata.Parse(raw); err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrConfig, AnnotationInitdata, err)
	}
	return raw, nil
}
