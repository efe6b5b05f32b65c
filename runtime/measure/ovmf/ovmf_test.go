package ovmf_test

import (
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/cocoon-cc/cocoon/runtime/measure/ovmf"
	"github.com/cocoon-cc/cocoon/runtime/measure/ovmf/ovmftest"
)

func TestParseSynthetic(t *testing.T) {
	md := ovmftest.Metadata([3]uint32{0x800000, 0x9000, 1}, [3]uint32{0x80d000, 0x1000, 2},
		[3]uint32{0x80e000, 0x1000, 3}, [3]uint32{0x810000, 0x1000, 0x10})
	img := ovmftest.Image(2, []ovmftest.Entry{
		{GUID: ovmf.SEVESResetBlockGUID, Data: ovmftest.U32s(0x80b004)},
		{GUID: ovmf.SEVHashTableGUID, Data: ovmftest.U32s(0x810c00, 0x400)},
		{GUID: ovmf.SEVMetadataGUID, Data: ovmftest.U32s(0x800)},
	}, map[int][]byte{0x800: md})
	f, err := ovmf.Parse(img)
	if err != nil {
		t.Fatal(err)
	}
	if f.GPA() != ovmf.FourGiB-2*ovmf.PageSize {
		t.Errorf("GPA %#x", f.GPA())
	}
	if eip, ok := f.ResetEIP(); !ok || eip != 0x80b004 {
		t.Errorf("reset EIP %#x %v", eip, ok)
	}
	if gpa, size, ok := f.HashTable(); !ok || gpa != 0x810c00 || size != 0x400 {
		t.Errorf("hash table %#x %#x %v", gpa, size, ok)
	}
	want := []ovmf.Section{{0x800000, 0x9000, ovmf.SectionSNPSecMem}, {0x80d000, 0x1000, ovmf.SectionSNPSecrets},
		{0x80e000, 0x1000, ovmf.SectionCPUID}, {0x810000, 0x1000, ovmf.SectionSNPKernelHashes}}
	if got := f.Sections(); len(got) != len(want) {
		t.Fatalf("sections %v, want %v", got, want)
	}
	for i, s := range f.Sections() {
		if s != want[i] {
			t.Errorf("section %d: %+v, want %+v", i, s, want[i])
		}
	}
	if !f.HasSection(ovmf.SectionSNPKernelHashes) || f.HasSection(ovmf.SectionSVSMCAA) {
		t.Error("HasSection")
	}
}

func TestParseInvalid(t *testing.T) {
	reset := ovmftest.Entry{GUID: ovmf.SEVESResetBlockGUID, Data: ovmftest.U32s(0x80b004)}
	meta := func(off uint32) ovmftest.Entry {
		return ovmftest.Entry{GUID: ovmf.SEVMetadataGUID, Data: ovmftest.U32s(off)}
	}
	good := ovmftest.Metadata([3]uint32{0x800000, 0x1000, 1})
	for name, img := range map[string][]byte{
		"empty":           nil,
		"partial page":    make([]byte, ovmf.PageSize+1),
		"too big":         make([]byte, ovmf.MaxSize+ovmf.PageSize),
		"short entry":     ovmftest.Image(1, []ovmftest.Entry{{GUID: ovmf.SEVESResetBlockGUID, Data: []byte{1}}}, nil),
		"metadata beyond": ovmftest.Image(1, []ovmftest.Entry{reset, meta(ovmf.PageSize + 16)}, nil),
		"metadata tiny":   ovmftest.Image(1, []ovmftest.Entry{reset, meta(8)}, nil),
		"bad signature":   ovmftest.Image(1, []ovmftest.Entry{reset, meta(0x800)}, map[int][]byte{0x800: append([]byte("XSEV"), good[4:]...)}),
		"bad version":     ovmftest.Image(1, []ovmftest.Entry{reset, meta(0x800)}, map[int][]byte{0x800: append(append([]byte("ASEV"), good[4:8]...), ovmftest.U32s(2, 1)...)}),
		"too many sections": ovmftest.Image(1, []ovmftest.Entry{reset, meta(0x800)},
			map[int][]byte{0x800: append([]byte("ASEV"), ovmftest.U32s(28, 1, 1000)...)}),
		"size past end": ovmftest.Image(1, []ovmftest.Entry{reset, meta(0x10)},
			map[int][]byte{0x10: append([]byte("ASEV"), ovmftest.U32s(28, 1, 1)...)}),
		"unknown section": ovmftest.Image(1, []ovmftest.Entry{reset, meta(0x800)}, map[int][]byte{0x800: ovmftest.Metadata([3]uint32{0x800000, 0x1000, 7})}),
		"unaligned section": ovmftest.Image(1, []ovmftest.Entry{reset, meta(0x800)},
			map[int][]byte{0x800: ovmftest.Metadata([3]uint32{0x800010, 0x1000, 1})}),
		"empty section": ovmftest.Image(1, []ovmftest.Entry{reset, meta(0x800)}, map[int][]byte{0x800: ovmftest.Metadata([3]uint32{0x800000, 0, 1})}),
		"section past 4G": ovmftest.Image(1, []ovmftest.Entry{reset, meta(0x800)},
			map[int][]byte{0x800: ovmftest.Metadata([3]uint32{0xfffff000, 0x2000, 1})}),
		"duplicate entry": ovmftest.Image(1, []ovmftest.Entry{reset, reset}, nil),
		"sections too large": ovmftest.Image(1, []ovmftest.Entry{reset, meta(0x800)},
			map[int][]byte{0x800: ovmftest.Metadata([3]uint32{0, 0x8000000, 1}, [3]uint32{0x8000000, 0x8001000, 1})}),
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := ovmf.Parse(img); !errors.Is(err, ovmf.ErrInvalid) {
				t.Fatalf("error %v, want ErrInvalid", err)
			}
		})
	}

	t.Run("table size", func(t *testing.T) {
		img := ovmftest.Image(1, nil, nil)
		binary.LittleEndian.PutUint16(img[len(img)-ovmf.FooterOffset-ovmf.EntryHeaderSize:], 0xffff)
		if _, err := ovmf.Parse(img); !errors.Is(err, ovmf.ErrInvalid) {
			t.Fatalf("error %v, want ErrInvalid", err)
		}
	})
	t.Run("entry size", func(t *testing.T) {
		img := ovmftest.Image(1, []ovmftest.Entry{reset}, nil)
		binary.LittleEndian.PutUint16(img[len(img)-ovmf.FooterOffset-2*ovmf.EntryHeaderSize:], 3)
		if _, err := ovmf.Parse(img); !errors.Is(err, ovmf.ErrInvalid) {
			t.Fatalf("error %v, want ErrInvalid", err)
		}
	})
}

// TestParseNoFooter: an image without the footer GUID is a firmware
// without SEV support, not a malformed one.
func TestParseNoFooter(t *testing.T) {
	f, err := ovmf.Parse(make([]byte, ovmf.PageSize))
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := f.ResetEIP(); ok || len(f.Sections()) != 0 {
		t.Fatal("entries found in an image without a footer table")
	}
}

// TestParseSNPBuilds parses synthetic images shaped like edk2's two SNP
// builds: the AmdSev one has the kernel-hashes page, the OvmfPkgX64 one
// has its hash table entry with a zero address.
func TestParseSNPBuilds(t *testing.T) {
	amd, err := ovmf.Parse(ovmftest.AmdSev())
	if err != nil {
		t.Fatal(err)
	}
	if eip, _ := amd.ResetEIP(); eip != ovmftest.ResetEIP {
		t.Errorf("AmdSev reset EIP %#x, want %#x", eip, ovmftest.ResetEIP)
	}
	if gpa, size, ok := amd.HashTable(); !ok || gpa != ovmftest.HashTableGPA || size != ovmftest.HashTableSize {
		t.Errorf("AmdSev hash table %#x+%#x %v", gpa, size, ok)
	}
	var types []ovmf.SectionType
	for _, s := range amd.Sections() {
		types = append(types, s.Type)
	}
	want := []ovmf.SectionType{ovmf.SectionSNPSecMem, ovmf.SectionSNPSecMem, ovmf.SectionSNPSecrets, ovmf.SectionCPUID,
		ovmf.SectionSVSMCAA, ovmf.SectionSNPKernelHashes, ovmf.SectionSNPSecMem}
	if len(types) != len(want) {
		t.Fatalf("AmdSev sections %v, want %v", types, want)
	}
	for i := range want {
		if types[i] != want[i] {
			t.Fatalf("AmdSev sections %v, want %v", types, want)
		}
	}
	x64, err := ovmf.Parse(ovmftest.OvmfX64())
	if err != nil {
		t.Fatal(err)
	}
	if _, _, ok := x64.HashTable(); ok || x64.HasSection(ovmf.SectionSNPKernelHashes) {
		t.Error("OvmfX64 has a kernel hash table")
	}
}

// TestParseDebianOVMF parses Debian's ovmf package (edk2 2022.11): its
// 2 MiB OvmfPkgX64 build carries SEV metadata without a kernel-hashes page,
// its 4 MiB builds carry no SEV metadata at all.
func TestParseDebianOVMF(t *testing.T) {
	small := mustParseFile(t, debianOVMF(t, "OVMF/OVMF_CODE.fd"))
	if len(small.Sections()) == 0 || small.HasSection(ovmf.SectionSNPKernelHashes) {
		t.Errorf("OVMF_CODE.fd sections %v: want SEV metadata without SNP_KERNEL_HASHES", small.Sections())
	}
	if _, ok := small.ResetEIP(); !ok {
		t.Error("OVMF_CODE.fd has no SEV-ES reset block")
	}
	big := mustParseFile(t, debianOVMF(t, "OVMF/OVMF_CODE_4M.fd"))
	if len(big.Sections()) != 0 {
		t.Errorf("OVMF_CODE_4M.fd sections %v: want none", big.Sections())
	}
}

// debianOVMF is the path of a file of Debian's ovmf package under
// /usr/share, which scripts/install-deps.sh installs.
func debianOVMF(t *testing.T, name string) string {
	path := filepath.Join("/usr/share", name)
	if _, err := os.Stat(path); err != nil {
		t.Skipf("SKIP: Debian's ovmf package is not installed (%v); scripts/install-deps.sh installs it", err)
	}
	return path
}

func mustParseFile(t *testing.T, path string) *ovmf.Firmware {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	f, err := ovmf.Parse(b)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return f
}

func TestGUID(t *testing.T) {
	// The footer GUID as it sits in the upstream image bytes.
	const raw = "\xde\x82\xb5\x96\xb2\x1f\xf7\x45\xba\xea\xa3\x66\xc5\x5a\x08\x2d"
	if string(ovmf.FooterGUID[:]) != raw {
		t.Fatalf("footer GUID bytes %x", ovmf.FooterGUID[:])
	}
	if s := ovmf.FooterGUID.String(); s != "96b582de-1fb2-45f7-baea-a366c55a082d" {
		t.Fatalf("String %s", s)
	}
	if _, err := ovmf.ParseGUID("not-a-guid"); err == nil {
		t.Fatal("bad GUID parsed")
	}
}
