package agent

import (
	"errors"
	"reflect"
	"testing"

	"google.golang.org/protobuf/proto"
)

func TestGuestPullStorage(t *testing.T) {
	meta := map[string]string{"io.kubernetes.cri.container-type": "container", "a<b": "x&y"}
	s, err := GuestPullStorage("c1", "registry.example/app:1", meta)
	if err != nil {
		t.Fatal(err)
	}
	// Kata's runtime's bytes: Go's encoding/json, keys sorted, HTML escaped.
	want := &Storage{Driver: "image_guest_pull", Source: "registry.example/app:1", Fstype: "overlay",
		MountPoint: "/run/kata-containers/c1/rootfs", Options: []string{},
		DriverOptions: []string{`image_guest_pull={"metadata":{"a\u003cb":"x\u0026y","io.kubernetes.cri.container-type":"container"}}`}}
	if !proto.Equal(s, want) {
		t.Fatalf("storage %v\nwant %v", s, want)
	}
	got, err := s.GuestPull("c1")
	if err != nil || !reflect.DeepEqual(got.Metadata, meta) {
		t.Fatalf("GuestPull: %v %v", got, err)
	}
	if s, _ := GuestPullStorage("c2", "img", nil); s.DriverOptions[0] != `image_guest_pull={"metadata":{}}` {
		t.Errorf("no metadata: %s", s.DriverOptions[0])
	}
}

func TestGuestPullRefused(t *testing.T) {
	good := func() *Storage { s, _ := GuestPullStorage("c1", "img", nil); return s }
	for name, change := range map[string]func(*Storage){
		"other driver":         func(s *Storage) { s.Driver = "virtio-fs" },
		"no image":             func(s *Storage) { s.Source = "" },
		"fstype":               func(s *Storage) { s.Fstype = "ext4" },
		"other container":      func(s *Storage) { s.MountPoint = GuestRootfs("c2") },
		"escaping mount point": func(s *Storage) { s.MountPoint = "/run/kata-containers/c1/../c2/rootfs" },
		"options":              func(s *Storage) { s.Options = []string{"ro"} },
		"fs_group":             func(s *Storage) { s.FsGroup = &FSGroup{GroupId: 1} },
		"shared":               func(s *Storage) { s.Shared = true },
		"no driver option":     func(s *Storage) { s.DriverOptions = []string{"other=1"} },
		"two driver options":   func(s *Storage) { s.DriverOptions = append(s.DriverOptions, s.DriverOptions[0]) },
		"bad json":             func(s *Storage) { s.DriverOptions = []string{"image_guest_pull={"} },
		"metadata not strings": func(s *Storage) { s.DriverOptions = []string{`image_guest_pull={"metadata":{"a":1}}`} },
	} {
		s := good()
		change(s)
		if _, err := s.GuestPull("c1"); !errors.Is(err, ErrStorage) {
			t.Errorf("%s: %v, want ErrStorage", name, err)
		}
	}
	if _, err := (*Storage)(nil).GuestPull("c1"); !errors.Is(err, ErrStorage) {
		t.Errorf("nil storage: %v", err)
	}
}

// FuzzGuestPull: any driver option the host sends is refused or parsed,
// never a panic.
func FuzzGuestPull(f *testing.F) {
	f.Add(`{"metadata":{"io.kubernetes.cri.container-type":"sandbox"}}`)
	f.Add(`{"metadata":null}`)
	f.Add(`[]`)
	f.Fuzz(func(t *testing.T, opt string) {
		s, _ := GuestPullStorage("c", "img", nil)
		s.DriverOptions = []string{guestPullOption + opt}
		if p, err := s.GuestPull("c"); err == nil && p == nil {
			t.Fatal("nil metadata without an error")
		}
	})
}
