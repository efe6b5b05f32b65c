package agent

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/cocoon-cc/cocoon/agent/policy"
	"github.com/cocoon-cc/cocoon/guest/cdh/securemount"
	pb "github.com/cocoon-cc/cocoon/protocol/ttrpc/agent"
)

func TestParsePCIPath(t *testing.T) {
	if s, err := parsePCIPath("10/00"); err != nil || !slices.Equal(s, []int{0x10, 0}) {
		t.Fatalf("%v %v", s, err)
	}
	for _, bad := range []string{"", "10/", "1/00", "20/00", "0x/00", "10/00/00/00/00/00/00/00/00", "../00", "+1/00"} {
		if _, err := parsePCIPath(bad); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("%q: %v", bad, err)
		}
	}
}

// FuzzParsePCIPath: a storage's source comes from the host.
func FuzzParsePCIPath(f *testing.F) {
	f.Add("10/00")
	f.Add("1f/1f/00")
	f.Fuzz(func(t *testing.T, p string) {
		slots, err := parsePCIPath(p)
		if err != nil {
			return
		}
		for _, s := range slots {
			if s < 0 || s > 0x1f {
				t.Fatalf("%q: slot %d", p, s)
			}
		}
	})
}

// TestLuksSource: a LUKS2 device is opened, a blank one formatted only
// when the policy allows it, and anything else refused.
func TestLuksSource(t *testing.T) {
	dir := t.TempDir()
	file := func(name string, head []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, append(head, make([]byte, 2<<20)...), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	luks, blank, data := file("luks", []byte("LUKS\xba\xbe\x00\x02")), file("blank", nil), file("data", []byte("ext4?"))
	for _, c := range []struct {
		dev    string
		format bool
		want   string
	}{{luks, false, securemount.SourceEncrypted}, {luks, true, securemount.SourceEncrypted}, {blank, true, securemount.SourceEmpty}} {
		if got, err := luksSource(c.dev, c.format); err != nil || got != c.want {
			t.Errorf("%s format=%v: %q %v", filepath.Base(c.dev), c.format, got, err)
		}
	}
	for _, c := range []struct {
		dev    string
		format bool
	}{{blank, false}, {data, true}, {data, false}} {
		if _, err := luksSource(c.dev, c.format); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("%s format=%v: %v", filepath.Base(c.dev), c.format, err)
		}
	}
}

// TestEncryptedVolumesPolicy: the devices the policy names must come with
// their disk, and its entries must say where and with which key.
func TestEncryptedVolumesPolicy(t *testing.T) {
	ctx := context.Background()
	agentWith := func(vols string) *Agent {
		return testAgentWith(t, policy.AllowAll()+"\nencrypted_volumes := "+vols+"\n")
	}
	spec := &specs.Spec{Linux: &specs.Linux{Devices: []specs.LinuxDevice{{Path: "/dev/xvda", Type: "b"}}}}
	a := agentWith(`{"/dev/xvda": {"key": "kbs:///default/pv/key", "mount_point": "/data"}}`)
	if err := a.openDevices(ctx, &pb.CreateContainerRequest{}, spec); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("no disk for a named device: %v", err)
	}
	a = agentWith(`{"/dev/xvda": {"key": "kbs:///default/pv/key", "mount_point": "data"}}`)
	if err := a.openDevices(ctx, &pb.CreateContainerRequest{}, spec); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("relative mount point: %v", err)
	}
	a = agentWith(`{"/dev/other": {"key": "kbs:///default/pv/key", "mount_point": "/data"}}`)
	if err := a.openDevices(ctx, &pb.CreateContainerRequest{}, spec); err != nil || len(spec.Mounts) != 0 {
		t.Errorf("a device the policy does not name: %v %v", err, spec.Mounts)
	}
}
