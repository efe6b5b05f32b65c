// Package securemount implements SecureMount's "block-device" volume
// type: a LUKS2 device (Debian's cryptsetup) opened with a key from the
// KBS, a sealed secret or a local file, exposed as a device or mounted as
// a file system. The key reaches cryptsetup on stdin only.
package securemount

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// VolumeBlockDevice is the volume type this package serves.
const VolumeBlockDevice = "block-device"

var (
	// ErrInvalid: a request field or option is missing or malformed.
	ErrInvalid = errors.New("invalid secure mount request")
	// ErrUnsupported: a volume type, encryption type or file system the CDH
	// does not serve.
	ErrUnsupported = errors.New("unsupported secure mount request")
	// ErrKey: the key could not be obtained.
	ErrKey = errors.New("secure mount key unavailable")
	// ErrDevice: cryptsetup, mkfs or mount failed.
	ErrDevice = errors.New("secure mount device operation failed")
)

// Request is the SecureMount request (and cdh-oneshot's storage file).
type Request struct {
	VolumeType string            `json:"volume_type"`
	Options    map[string]string `json:"options"`
	Flags      []string          `json:"flags"`
	MountPoint string            `json:"mount_point"`
}

// Source types.
const (
	SourceEncrypted = "encrypted"
	SourceEmpty     = "empty"
)

// Target types.
const (
	TargetDevice     = "device"
	TargetFileSystem = "fileSystem"
)

// params are the block-device options, named as upstream names them.
type params struct {
	devicePath string
	sourceType string // sourceType
	key        string // key: sealed.…, kbs:///…, file://…; random when empty
	integrity  bool   // dataIntegrity
	mapperName string // mapperName
	targetType string // targetType
	fsType     string // filesystemType
	mkfsOpts   []string
	mountPoint string
}

// parse validates r.
func parse(r *Request) (*params, error) {
	if r.VolumeType != VolumeBlockDevice {
		return nil, fmt.Errorf("%w: volume_type %q (served: %q)", ErrUnsupported, r.VolumeType, VolumeBlockDevice)
	}
	o := r.Options
	if enc := o["encryptionType"]; enc != "luks2" {
		return nil, fmt.Errorf("%w: encryptionType %q (served: luks2)", ErrUnsupported, enc)
	}
	p := &params{sourceType: o["sourceType"], key: o["key"], mapperName: o["mapperName"],
		targetType: o["targetType"], fsType: o["filesystemType"], mkfsOpts: strings.Fields(o["mkfsOpts"]),
		mountPoint: filepath.Clean(r.MountPoint)}
	var err error
	if p.devicePath, err = devicePath(o["deviceId"], o["devicePath"]); err != nil {
		return nil, err
	}
	if p.integrity, err = parseBool(o["dataIntegrity"]); err != nil {
		return nil, err
	}
	if err := p.check(); err != nil {
		return nil, err
	}
	return p, nil
}

func (p *params) check() error {
	if p.sourceType != SourceEncrypted && p.sourceType != SourceEmpty {
		return fmt.Errorf("%w: sourceType %q (want encrypted or empty)", ErrInvalid, p.sourceType)
	}
	if p.targetType != TargetDevice && p.targetType != TargetFileSystem {
		return fmt.Errorf("%w: targetType %q (want device or fileSystem)", ErrInvalid, p.targetType)
	}
	if p.fsType == "" {
		p.fsType = "ext4"
	}
	if p.fsType != "ext4" {
		return fmt.Errorf("%w: filesystemType %q (served: ext4)", ErrUnsupported, p.fsType)
	}
	if p.sourceType == SourceEncrypted && p.key == "" {
		return fmt.Errorf("%w: an encrypted source needs a key", ErrInvalid)
	}
	if !filepath.IsAbs(p.mountPoint) {
		return fmt.Errorf("%w: mount_point must be absolute", ErrInvalid)
	}
	if p.mapperName == "" {
		p.mapperName = "cdh-" + strconv.FormatInt(int64(os.Getpid()), 36) + "-" + filepath.Base(p.devicePath)
	}
	if strings.ContainsAny(p.mapperName, "/ \t\n") || strings.HasPrefix(p.mapperName, "-") {
		return fmt.Errorf("%w: mapperName %q", ErrInvalid, p.mapperName)
	}
	return nil
}

func parseBool(s string) (bool, error) {
	switch s {
	case "", "false":
		return false, nil
	case "true":
		return true, nil
	}
	return false, fmt.Errorf("%w: dataIntegrity %q (want true or false)", ErrInvalid, s)
}

// devicePath resolves deviceId ("MAJ:MIN", preferred, as upstream) or
// devicePath.
func devicePath(id, path string) (string, error) {
	if id == "" {
		if !filepath.IsAbs(path) {
			return "", fmt.Errorf("%w: devicePath or deviceId required (devicePath must be absolute)", ErrInvalid)
		}
		return filepath.Clean(path), nil
	}
	maj, min, ok := strings.Cut(id, ":")
	_, err1 := strconv.ParseUint(maj, 10, 32)
	_, err2 := strconv.ParseUint(min, 10, 32)
	if !ok || err1 != nil || err2 != nil {
		return "", fmt.Errorf("%w: deviceId %q is not MAJ:MIN", ErrInvalid, id)
	}
	b, err := os.ReadFile("/sys/dev/block/" + maj + ":" + min + "/uevent")
	if err != nil {
		return "", fmt.Errorf("%w: deviceId %s: %w", ErrDevice, id, err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if name, ok := strings.CutPrefix(l, "DEVNAME="); ok && !strings.Contains(name, "..") {
			return "/dev/" + name, nil
		}
	}
	return "", fmt.Errorf("%w: deviceId %s has no DEVNAME", ErrDevice, id)
}
