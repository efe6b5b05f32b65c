package snp

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/cocoon-cc/cocoon/runtime/measure/ovmf"
	"github.com/cocoon-cc/cocoon/runtime/measure/ovmf/ovmftest"
)

// firmware writes a synthetic SNP firmware image (ovmftest.AmdSev or
// OvmfX64) to a file, as a user passes it.
func firmware(t testing.TB, image []byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "OVMF.fd")
	if err := os.WriteFile(path, image, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestLaunchDigestVectors pins the digests of the synthetic firmwares for
// sev-snp-measure's test cases (tests/test_guest.py, SNP mode, QEMU). The
// algorithm was checked against that tool's own vectors when written, and
// TestDebianOVMFDigests still compares it with sev-snp-measure's output
// for Debian's firmware; these catch any change of result.
func TestLaunchDigestVectors(t *testing.T) {
	amdSev, x64 := firmware(t, ovmftest.AmdSev()), firmware(t, ovmftest.OvmfX64())
	const console = "console=ttyS0 loglevel=7"
	for _, tc := range []struct {
		name           string
		ovmf           string
		kernel, initrd string
		cmdline        string
		vcpus          int
		features       uint64
		want           string
	}{
		{"default", amdSev, "/dev/null", "/dev/null", console, 1, 0x21,
			"344ba3fb5c012d3b7c222fbd4e8d1105b4092fbaff80b2ba36e85373479fb8595cb04b76208b8d761b1f68dbba378e0b"},
		{"snp only", amdSev, "/dev/null", "/dev/null", console, 1, 0x1,
			"c3ceb972f6219e8add3524e946e57178f44305fe9c544cb45bcdacbb259ea75ebf3889910949d5668bbba63c3ce59fde"},
		{"empty cmdline", amdSev, "/dev/null", "/dev/null", "", 1, 0x21,
			"27585097c29ff137a470b9275b45b5dc97bde17f706b7801e7bc2f7cf231103794d46c9f4ce1cf11ab0b621b1b6428bd"},
		{"empty cmdline snp only", amdSev, "/dev/null", "/dev/null", "", 1, 0x1,
			"82f652480ad1c8c30699a5f657bb5d1955d35cc5f6becd8b256dde0d822db09f3b84696499465075641a3add83831b29"},
		{"no kernel", amdSev, "", "", "", 1, 0x21,
			"85095f3587b793f523782f128e2d1d300f3e2fd6b9beb4e8b5af8855ad34d2da9af33d7468123d664f72f3109cef8359"},
		{"no kernel snp only", amdSev, "", "", "", 1, 0x1,
			"366cf57d7ce946c4ac2b39843f524f397be197819dcd093b788feb48822b8a35a3816028de3d535a26da876a3653e4b6"},
		{"4 vcpus", amdSev, "/dev/null", "/dev/null", "", 4, 0x21,
			"d640665453d8caa13932d64f132bc42fe1bc468c5c116b83450425e83f9163539dbe114ad64012387f7da9f26e808f9d"},
		{"4 vcpus snp only", amdSev, "/dev/null", "/dev/null", "", 4, 0x1,
			"dc997fd41f9f4089d0b90df7b896333fd9267029e961312b85034568474c24ea87e36eeb2ef534f1bf514728ff09534c"},
		{"OvmfX64", x64, "", "", "", 1, 0x21,
			"534bf5ac9a489f09ce63774418a92993487644069814617f5e1559e1abb9c42d580f7aa65e4b43859fe4d853e7ea4904"},
		{"OvmfX64 snp only", x64, "", "", "", 1, 0x1,
			"d17a493267f62151db4a9388ccc37a02a053b41b0d1ccffa15a6eb820895f62682994e067bc1f047fbfb5bb4a890ff59"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ld, err := LaunchDigest(Options{OVMFPath: tc.ovmf, Kernel: tc.kernel, Initrd: tc.initrd,
				Cmdline: tc.cmdline, VCPUs: tc.vcpus, VCPUType: "EPYC-v4", GuestFeatures: tc.features})
			if err != nil {
				t.Fatal(err)
			}
			if got := hex.EncodeToString(ld[:]); got != tc.want {
				t.Fatalf("launch digest\n got %s\nwant %s", got, tc.want)
			}
		})
	}
}

// TestOVMFDigest: seeding LaunchDigest with the firmware-only digest gives
// the full digest.
func TestOVMFDigest(t *testing.T) {
	image := ovmftest.AmdSev()
	fw, err := ovmf.Parse(image)
	if err != nil {
		t.Fatal(err)
	}
	seed, err := OVMFDigest(fw)
	if err != nil {
		t.Fatal(err)
	}
	const want = "acad33bcce92b11f11364be2a04448acd0cb3dd3e76d5338f44817c50201ad939b2c2160baf3c746a5873a64bf234dce"
	if got := hex.EncodeToString(seed[:]); got != want {
		t.Fatalf("OVMF digest %s, want %s", got, want)
	}
	opts := Options{OVMF: image, Kernel: "/dev/null", VCPUs: 2, VCPUType: "EPYC-Milan"}
	full, err := LaunchDigest(opts)
	if err != nil {
		t.Fatal(err)
	}
	opts.OVMFDigest = seed[:]
	seeded, err := LaunchDigest(opts)
	if err != nil {
		t.Fatal(err)
	}
	if seeded != full {
		t.Fatalf("seeded digest %x differs from full %x", seeded, full)
	}
}

// TestLaunchDigestInputsMatter: every input the guest depends on changes
// the digest, and equal inputs given two ways give equal digests.
func TestLaunchDigestInputsMatter(t *testing.T) {
	dir := t.TempDir()
	kernel, initrd := filepath.Join(dir, "vmlinuz"), filepath.Join(dir, "initrd")
	if err := os.WriteFile(kernel, []byte("kernel"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(initrd, []byte("initrd"), 0o600); err != nil {
		t.Fatal(err)
	}
	base := Options{OVMF: ovmftest.AmdSev(), Kernel: kernel, Initrd: initrd,
		Cmdline: "console=hvc0", VCPUs: 2, VCPUType: "EPYC-Genoa"}
	ref := mustDigest(t, base)
	seen := map[[DigestSize]byte]string{ref: "base"}
	for name, mod := range map[string]func(*Options){
		"vcpus":    func(o *Options) { o.VCPUs = 3 },
		"cpu type": func(o *Options) { o.VCPUType = "EPYC-Milan" },
		"features": func(o *Options) { o.GuestFeatures = 0x21 },
		"cmdline":  func(o *Options) { o.Cmdline = "console=hvc1" },
		"initrd":   func(o *Options) { o.Initrd = "" },
		"kernel":   func(o *Options) { o.Kernel = initrd },
	} {
		o := base
		mod(&o)
		d := mustDigest(t, o)
		if prev, dup := seen[d]; dup {
			t.Errorf("changing %s gives the digest of %s", name, prev)
		}
		seen[d] = name
	}
	same := base
	same.Kernel, same.Initrd, same.Cmdline = "", "", ""
	same.Hashes = &Hashes{Kernel: sha256.Sum256([]byte("kernel")), Initrd: sha256.Sum256([]byte("initrd")),
		Cmdline: sha256.Sum256([]byte("console=hvc0\x00"))}
	same.VCPUType, same.VCPUSig = "", CPUSignature(25, 17, 0)
	if d := mustDigest(t, same); d != ref {
		t.Fatalf("precomputed hashes and signature give %x, want %x", d, ref)
	}
}

func mustDigest(t *testing.T, o Options) [DigestSize]byte {
	t.Helper()
	d, err := LaunchDigest(o)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestLaunchDigestErrors(t *testing.T) {
	amdSev, x64 := firmware(t, ovmftest.AmdSev()), firmware(t, ovmftest.OvmfX64())
	noFooter := make([]byte, 2*ovmf.PageSize)
	for _, tc := range []struct {
		name string
		opts Options
		want error
	}{
		{"kernel without hashes page", Options{OVMFPath: x64, Kernel: "/dev/null", VCPUs: 1, VCPUType: "EPYC"}, ErrNoKernelHashes},
		{"no vcpus", Options{OVMFPath: amdSev, VCPUType: "EPYC"}, ErrInvalidOptions},
		{"too many vcpus", Options{OVMFPath: amdSev, VCPUs: MaxVCPUs + 1, VCPUType: "EPYC"}, ErrInvalidOptions},
		{"no cpu", Options{OVMFPath: amdSev, VCPUs: 1}, ErrInvalidOptions},
		{"features without SNPActive", Options{OVMFPath: amdSev, VCPUs: 1, VCPUType: "EPYC", GuestFeatures: 0x20}, ErrInvalidOptions},
		{"unknown cpu", Options{OVMFPath: amdSev, VCPUs: 1, VCPUType: "Skylake"}, ErrUnknownCPUType},
		{"initrd without kernel", Options{OVMFPath: amdSev, Initrd: "/dev/null", VCPUs: 1, VCPUType: "EPYC"}, ErrInvalidOptions},
		{"no firmware", Options{VCPUs: 1, VCPUType: "EPYC"}, ovmf.ErrNoImage},
		{"short ovmf digest", Options{OVMFPath: amdSev, OVMFDigest: []byte{1}, VCPUs: 1, VCPUType: "EPYC"}, ErrInvalidOptions},
		{"no footer table", Options{OVMF: noFooter, VCPUs: 1, VCPUType: "EPYC"}, ErrNotSNPFirmware},
		{"partial page", Options{OVMF: make([]byte, 100), VCPUs: 1, VCPUType: "EPYC"}, ovmf.ErrInvalid},
		{"missing kernel", Options{OVMFPath: amdSev, Kernel: "/nonexistent/vmlinuz", VCPUs: 1, VCPUType: "EPYC"}, os.ErrNotExist},
		{"missing firmware", Options{OVMFPath: "/nonexistent/OVMF.fd", VCPUs: 1, VCPUType: "EPYC"}, os.ErrNotExist},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := LaunchDigest(tc.opts); !errors.Is(err, tc.want) {
				t.Fatalf("error %v, want %v", err, tc.want)
			}
		})
	}
}
