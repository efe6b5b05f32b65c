package launchmeasure

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/cocoon-cc/cocoon/image/imagetest"
	"github.com/cocoon-cc/cocoon/internal/testutil"
	"github.com/cocoon-cc/cocoon/operator/images"
	"github.com/cocoon-cc/cocoon/runtime/measure/ovmf"
	"github.com/cocoon-cc/cocoon/runtime/measure/ovmf/ovmftest"
)

// TestMeasure pulls a guest image with both firmwares from a real
// registry and checks the measurements are cocoon-measure's for the same
// files and the shim's command line.
func TestMeasure(t *testing.T) {
	reg := imagetest.StartRegistry(t)
	dir := t.TempDir()
	files := map[string]string{"vmlinuz": "a kernel", "initramfs.cpio.gz": "an initrd",
		"OVMF.amdsev.fd": string(ovmftest.AmdSev()),
		"TDVF.fd": string(ovmftest.TDVFImage(2, ovmf.TDVFSection{RawDataSize: 0x1000,
			MemoryAddress: 0xfffff000, MemoryDataSize: 0x1000, Type: ovmf.TDVFBFV, Attributes: ovmf.TDVFMRExtend}))}
	img := images.Image{Name: "guest", Files: map[string]string{}}
	for n, body := range files {
		p := filepath.Join(dir, n)
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		img.Files[n] = p
	}
	d, err := images.Build(context.Background(), testutil.RepoRoot(t), dir, img)
	if err != nil {
		t.Fatal(err)
	}
	ref := reg.Host + "/guest@" + d.String()
	if out, err := exec.Command("skopeo", "copy", "--dest-tls-verify=false", "oci:"+filepath.Join(dir, "guest")+":latest",
		"docker://"+reg.Host+"/guest:latest").CombinedOutput(); err != nil {
		t.Fatalf("skopeo: %v\n%s", err, out)
	}

	digest, got, err := Measure(context.Background(), ref, true, []string{"qemu", "qemu-snp", "qemu-tdx"},
		Launch{KernelParams: "debug", VCPUs: []int{1, 2}})
	if err != nil {
		t.Fatal(err)
	}
	if digest != d.String() {
		t.Errorf("digest %s, want %s", digest, d)
	}
	measure := func(args ...string) []string {
		out, err := exec.Command(testutil.Bin(t, "cocoon-measure"), args...).CombinedOutput()
		if err != nil {
			t.Fatalf("cocoon-measure %v: %v\n%s", args, err, out)
		}
		return strings.Fields(string(out))
	}
	want := []Result{
		{Flavour: "qemu-snp", Name: "snp_launch_measurement", Values: measure("snp", "--ovmf", img.Files["OVMF.amdsev.fd"],
			"--kernel", img.Files["vmlinuz"], "--initrd", img.Files["initramfs.cpio.gz"],
			"--append", "console=ttyS0 panic=-1 quiet cocoon.channel=serial debug", "--vcpus", "1,2", "--vcpu-type", "EPYC-v4")},
		{Flavour: "qemu-tdx", Name: "mr_td", Values: measure("tdx", "--ovmf", img.Files["TDVF.fd"])},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("measurements\n%+v\nwant cocoon-measure's\n%+v", got, want)
	}

	// A flavour whose firmware the image lacks has no measurement; a
	// reference that is not by digest is refused.
	if _, got, err := Measure(context.Background(), ref, true, []string{"qemu"}, Launch{VCPUs: []int{1}}); err != nil || len(got) != 0 {
		t.Errorf("qemu: %v %v", got, err)
	}
	if _, _, err := Measure(context.Background(), reg.Host+"/guest:latest", true, nil, Launch{}); err == nil {
		t.Error("a tag was measured")
	}
}
