package snp

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/cocoon-cc/cocoon/internal/testutil"
	"github.com/cocoon-cc/cocoon/runtime/measure/ovmf"
)

// fixture reads one of sev-snp-measure's firmware fixtures: the last 4 KiB
// of edk2-stable202405 OVMF builds, which hold everything the digest
// depends on besides those pages themselves.
func fixture(t testing.TB, name string) string {
	t.Helper()
	return filepath.Join(testutil.Fixtures(t), "sev-snp-measure", "tests", "fixtures", name)
}

// TestLaunchDigestUpstreamVectors checks the digests sev-snp-measure's
// tests state for its fixtures (tests/test_guest.py, SNP mode, QEMU); the
// virtee/sev Rust crate states the same values for the same files.
func TestLaunchDigestUpstreamVectors(t *testing.T) {
	amdSev, x64 := fixture(t, "ovmf_AmdSev_suffix.bin"), fixture(t, "ovmf_OvmfX64_suffix.bin")
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
			"803f691094946e42068aaa3a8f9e26a5c89f36f7b73ecfb28c653360fe4b3aba7e534442e7e1e17895dfe778d0228977"},
		{"snp only", amdSev, "/dev/null", "/dev/null", console, 1, 0x1,
			"6d287813eb5222d770f75005c664e34c204f385ce832cc2ce7d0d6f354454362f390ef83a92046c042e706363b4b08fa"},
		{"empty cmdline", amdSev, "/dev/null", "/dev/null", "", 1, 0x21,
			"329c8ce0972ae52343b64d34a434a86f245dfd74f5ed7aae15d22efc78fb9683632b9b50e4e1d7fa41179ef98a7ef198"},
		{"empty cmdline snp only", amdSev, "/dev/null", "/dev/null", "", 1, 0x1,
			"ddc5224521617a536ee7ce9dd6224d1b58a8d4fda1c741f3ac99fc4bfa04ba6e9fc98646d4a07a9079397fa3852819b5"},
		{"no kernel", amdSev, "", "", "", 1, 0x21,
			"e1e1ca029dd7973ab9513295be68198472dcd4fc834bd9af9b63f6e8a1674dbf281a9278a4a2ebe0eed9f22adbcd0e2b"},
		{"no kernel snp only", amdSev, "", "", "", 1, 0x1,
			"19358ba9a7615534a9a1e2f0dfc29384dcd4dcb7062ff9c6013b26869a5fc6ecabe033c48dd6f6db5d6d76e7c5df632d"},
		{"4 vcpus", amdSev, "/dev/null", "/dev/null", "", 4, 0x21,
			"4953b1fb416fa874980e8442b3706d345926d5f38879134e00813c5d7abcbe78eafe7b422907be0b4698e2414a631942"},
		{"4 vcpus snp only", amdSev, "/dev/null", "/dev/null", "", 4, 0x1,
			"5061fffb019493a903613d56d54b94912a1a2f9e4502385f5c194616753720a92441310ba6c4933de877c36e23046ad5"},
		{"OvmfX64", x64, "", "", "", 1, 0x21,
			"28797ae0afaba4005a81e629acebfb59e6687949d6be44007cd5506823b0dd66f146aaae26ff291eed7b493d8a64c385"},
		{"OvmfX64 snp only", x64, "", "", "", 1, 0x1,
			"da0296de8193586a5512078dcd719eccecbd87e2b825ad4148c44f665dc87df21e5b49e21523a9ad993afdb6a30b4005"},
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

// TestOVMFDigest checks the firmware-only digest against upstream's vector
// and that seeding LaunchDigest with it gives the full digest.
func TestOVMFDigest(t *testing.T) {
	image, err := os.ReadFile(fixture(t, "ovmf_AmdSev_suffix.bin"))
	if err != nil {
		t.Fatal(err)
	}
	fw, err := ovmf.Parse(image)
	if err != nil {
		t.Fatal(err)
	}
	seed, err := OVMFDigest(fw)
	if err != nil {
		t.Fatal(err)
	}
	const want = "086e2e9149ebf45abdc3445fba5b2da8270bdbb04094d7a2c37faaa4b24af3aa16aff8c374c2a55c467a50da6d466b74"
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
	base := Options{OVMFPath: fixture(t, "ovmf_AmdSev_suffix.bin"), Kernel: kernel, Initrd: initrd,
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
	amdSev, x64 := fixture(t, "ovmf_AmdSev_suffix.bin"), fixture(t, "ovmf_OvmfX64_suffix.bin")
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
