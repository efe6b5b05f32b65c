package securemount

import (
	"context"
	"errors"
	"testing"
)

func TestParse(t *testing.T) {
	ok := func() *Request {
		return &Request{VolumeType: VolumeBlockDevice, MountPoint: "/mnt/x", Options: map[string]string{
			"devicePath": "/dev/vdb", "sourceType": "empty", "encryptionType": "luks2", "targetType": "fileSystem",
			"key": "kbs:///default/disk/key", "mkfsOpts": "-m 0"}}
	}
	p, err := parse(ok())
	if err != nil || p.fsType != "ext4" || p.devicePath != "/dev/vdb" || len(p.mkfsOpts) != 2 || p.mapperName == "" {
		t.Fatalf("%+v %v", p, err)
	}
	for name, c := range map[string]struct {
		edit func(*Request)
		want error
	}{
		"volume":     {func(r *Request) { r.VolumeType = "alibaba-cloud-oss" }, ErrUnsupported},
		"encryption": {func(r *Request) { r.Options["encryptionType"] = "zfs" }, ErrUnsupported},
		"fs":         {func(r *Request) { r.Options["filesystemType"] = "xfs" }, ErrUnsupported},
		"source":     {func(r *Request) { r.Options["sourceType"] = "plain" }, ErrInvalid},
		"target":     {func(r *Request) { delete(r.Options, "targetType") }, ErrInvalid},
		"no device":  {func(r *Request) { delete(r.Options, "devicePath") }, ErrInvalid},
		"device id":  {func(r *Request) { r.Options["deviceId"] = "8" }, ErrInvalid},
		"integrity":  {func(r *Request) { r.Options["dataIntegrity"] = "yes" }, ErrInvalid},
		"no key":     {func(r *Request) { r.Options["sourceType"] = "encrypted"; delete(r.Options, "key") }, ErrInvalid},
		"relative":   {func(r *Request) { r.MountPoint = "mnt" }, ErrInvalid},
		"mapper":     {func(r *Request) { r.Options["mapperName"] = "../control" }, ErrInvalid},
	} {
		r := ok()
		c.edit(r)
		if _, err := parse(r); !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", name, err, c.want)
		}
	}
}

func TestKeyScheme(t *testing.T) {
	m := &Mounter{}
	if _, err := m.key(context.Background(), "/etc/shadow"); !errors.Is(err, ErrInvalid) {
		t.Fatal(err)
	}
	if _, err := m.key(context.Background(), "kbs:///bad"); !errors.Is(err, ErrInvalid) {
		t.Fatal(err)
	}
	if k, err := m.key(context.Background(), ""); err != nil || len(k) != randomKeySize {
		t.Fatal(err)
	}
}
