package snp

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/cocoon-cc/cocoon/runtime/measure/ovmf/ovmftest"
)

// debianInputs are Debian's OVMF (package ovmf) and cloud kernel (package
// linux-image-cloud-amd64), which scripts/install-deps.sh installs.
func debianInputs(t testing.TB) (ovmfDir, kernel, initrd string) {
	t.Helper()
	ovmfDir = "/usr/share/OVMF"
	kernels, _ := filepath.Glob("/boot/vmlinuz-*-cloud-amd64")
	if _, err := os.Stat(filepath.Join(ovmfDir, "OVMF_CODE.fd")); err != nil || len(kernels) == 0 {
		t.Skipf("SKIP: Debian's ovmf or cloud kernel is missing (run scripts/install-deps.sh): %v %v", err, kernels)
	}
	kernel = kernels[len(kernels)-1]
	initrd = filepath.Join("/boot", "initrd.img-"+filepath.Base(kernel)[len("vmlinuz-"):])
	if _, err := os.Stat(initrd); err != nil {
		initrd = ""
	}
	return ovmfDir, kernel, initrd
}

// TestDebianOVMF: Debian's 2 MiB OVMF (OvmfPkgX64) can launch an SNP guest
// but has no kernel-hashes page, so it cannot measure a direct-boot
// kernel; its 4 MiB builds have no SEV metadata at all.
func TestDebianOVMF(t *testing.T) {
	dir, kernel, _ := debianInputs(t)
	code := filepath.Join(dir, "OVMF_CODE.fd")
	if _, err := LaunchDigest(Options{OVMFPath: code, VCPUs: 2, VCPUType: "EPYC-Milan"}); err != nil {
		t.Fatalf("firmware-only launch: %v", err)
	}
	_, err := LaunchDigest(Options{OVMFPath: code, Kernel: kernel, VCPUs: 2, VCPUType: "EPYC-Milan"})
	if !errors.Is(err, ErrNoKernelHashes) {
		t.Fatalf("kernel with OvmfPkgX64: %v, want ErrNoKernelHashes", err)
	}
	_, err = LaunchDigest(Options{OVMFPath: filepath.Join(dir, "OVMF_CODE_4M.fd"), VCPUs: 1, VCPUType: "EPYC"})
	if !errors.Is(err, ErrNotSNPFirmware) {
		t.Fatalf("4 MiB build: %v, want ErrNotSNPFirmware", err)
	}
}

// TestDebianKernelHashes measures Debian's kernel and initrd through the
// AmdSev firmware: streaming them from disk gives the digest of their
// SHA-256 taken whole.
func TestDebianKernelHashes(t *testing.T) {
	_, kernel, initrd := debianInputs(t)
	const cmdline = "console=ttyS0 root=/dev/vda1"
	opts := Options{OVMF: ovmftest.AmdSev(), Kernel: kernel, Initrd: initrd,
		Cmdline: cmdline, VCPUs: 4, VCPUType: "EPYC-Genoa"}
	streamed := mustDigest(t, opts)

	h := &Hashes{Cmdline: CmdlineHash(cmdline)}
	for _, f := range []struct {
		path string
		sum  *[sha256.Size]byte
	}{{kernel, &h.Kernel}, {initrd, &h.Initrd}} {
		var b []byte
		if f.path != "" {
			var err error
			if b, err = os.ReadFile(f.path); err != nil {
				t.Fatal(err)
			}
		}
		*f.sum = sha256.Sum256(b)
	}
	opts.Kernel, opts.Initrd, opts.Cmdline, opts.Hashes = "", "", "", h
	if whole := mustDigest(t, opts); whole != streamed {
		t.Fatalf("streamed %x, whole %x", streamed, whole)
	}
}

// debianDigests are launch digests of Debian's OVMF builds (package ovmf
// 2022.11-6+deb12u2, by their SHA-256) that virtee's sev-snp-measure
// 0.0.13 computes for the same inputs.
var debianDigests = []struct {
	path, sha256 string
	vcpus        int
	cpu          string
	want         string
}{
	{"/usr/share/ovmf/OVMF.fd", "7b456907dd0786d415999e801a1ac4637b8ed4d7cf5378cfc6edbe5e574dd773", 2, "EPYC-Milan",
		"a175292a4a09fcfb760c5bd80c93ed667dbaafce6247d0f21fc06638658b3ebf2804d3019e2abed05cb6a9efe0a7464e"},
	{"/usr/share/OVMF/OVMF_CODE.fd", "d9b568def24088c92f34b5479e0ed7e44d0a4d4cea8a0f5716719180bba48106", 8, "EPYC-Rome",
		"566cfdd946446b16bfc85a6b453dc57ba6c7b02b180e2711dc685d5d8f77cfc37a5e179282c214155a9f66b30f6d977e"},
}

func TestDebianOVMFDigests(t *testing.T) {
	debianInputs(t)
	for _, tc := range debianDigests {
		image, err := os.ReadFile(tc.path)
		if err != nil {
			t.Fatal(err)
		}
		got := mustDigest(t, Options{OVMF: image, VCPUs: tc.vcpus, VCPUType: tc.cpu})
		if sum := sha256.Sum256(image); hex.EncodeToString(sum[:]) != tc.sha256 {
			t.Logf("no recorded digest for this %s (SHA-256 %x); got %x", tc.path, sum, got)
			continue
		}
		if hex.EncodeToString(got[:]) != tc.want {
			t.Errorf("%s: %x, want %s", tc.path, got, tc.want)
		}
	}
}
