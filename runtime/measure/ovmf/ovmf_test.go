package ovmf

import (
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/cocoon-cc/cocoon/internal/testutil"
)

// entry is a footer table entry to build an image with.
type entry struct {
	guid GUID
	data []byte
}

// image builds a firmware image of pages pages whose footer table holds
// entries (the first one nearest the footer), with extra bytes written at
// their offsets from the image end.
func image(pages int, entries []entry, extra map[int][]byte) []byte {
	b := make([]byte, pages*PageSize)
	end := len(b) - footerOffset
	pos := end - entryHeaderSize
	total := entryHeaderSize
	for _, e := range entries {
		n := len(e.data) + entryHeaderSize
		pos -= n
		copy(b[pos:], e.data)
		binary.LittleEndian.PutUint16(b[pos+len(e.data):], uint16(n))
		copy(b[pos+len(e.data)+2:], e.guid[:])
		total += n
	}
	binary.LittleEndian.PutUint16(b[end-entryHeaderSize:], uint16(total))
	copy(b[end-16:], FooterGUID[:])
	for fromEnd, v := range extra {
		copy(b[len(b)-fromEnd:], v)
	}
	return b
}

func u32s(v ...uint32) []byte {
	b := make([]byte, 4*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint32(b[4*i:], x)
	}
	return b
}

// metadata is an "ASEV" block with the given sections (gpa, size, type).
func metadata(sections ...[3]uint32) []byte {
	b := append([]byte("ASEV"), u32s(uint32(16+12*len(sections)), 1, uint32(len(sections)))...)
	for _, s := range sections {
		b = append(b, u32s(s[0], s[1], s[2])...)
	}
	return b
}

func TestParseSynthetic(t *testing.T) {
	md := metadata([3]uint32{0x800000, 0x9000, 1}, [3]uint32{0x80d000, 0x1000, 2},
		[3]uint32{0x80e000, 0x1000, 3}, [3]uint32{0x810000, 0x1000, 0x10})
	img := image(2, []entry{
		{SEVESResetBlockGUID, u32s(0x80b004)},
		{SEVHashTableGUID, u32s(0x810c00, 0x400)},
		{SEVMetadataGUID, u32s(0x800)},
	}, map[int][]byte{0x800: md})
	f, err := Parse(img)
	if err != nil {
		t.Fatal(err)
	}
	if f.GPA() != FourGiB-2*PageSize {
		t.Errorf("GPA %#x", f.GPA())
	}
	if eip, ok := f.ResetEIP(); !ok || eip != 0x80b004 {
		t.Errorf("reset EIP %#x %v", eip, ok)
	}
	if gpa, size, ok := f.HashTable(); !ok || gpa != 0x810c00 || size != 0x400 {
		t.Errorf("hash table %#x %#x %v", gpa, size, ok)
	}
	want := []Section{{0x800000, 0x9000, SectionSNPSecMem}, {0x80d000, 0x1000, SectionSNPSecrets},
		{0x80e000, 0x1000, SectionCPUID}, {0x810000, 0x1000, SectionSNPKernelHashes}}
	if got := f.Sections(); len(got) != len(want) {
		t.Fatalf("sections %v, want %v", got, want)
	}
	for i, s := range f.Sections() {
		if s != want[i] {
			t.Errorf("section %d: %+v, want %+v", i, s, want[i])
		}
	}
	if !f.HasSection(SectionSNPKernelHashes) || f.HasSection(SectionSVSMCAA) {
		t.Error("HasSection")
	}
}

func TestParseInvalid(t *testing.T) {
	reset := entry{SEVESResetBlockGUID, u32s(0x80b004)}
	meta := func(off uint32) entry { return entry{SEVMetadataGUID, u32s(off)} }
	good := metadata([3]uint32{0x800000, 0x1000, 1})
	for name, img := range map[string][]byte{
		"empty":           nil,
		"partial page":    make([]byte, PageSize+1),
		"too big":         make([]byte, MaxSize+PageSize),
		"short entry":     image(1, []entry{{SEVESResetBlockGUID, []byte{1}}}, nil),
		"metadata beyond": image(1, []entry{reset, meta(PageSize + 16)}, nil),
		"metadata tiny":   image(1, []entry{reset, meta(8)}, nil),
		"bad signature":   image(1, []entry{reset, meta(0x800)}, map[int][]byte{0x800: append([]byte("XSEV"), good[4:]...)}),
		"bad version":     image(1, []entry{reset, meta(0x800)}, map[int][]byte{0x800: append(append([]byte("ASEV"), good[4:8]...), u32s(2, 1)...)}),
		"too many sections": image(1, []entry{reset, meta(0x800)},
			map[int][]byte{0x800: append([]byte("ASEV"), u32s(28, 1, 1000)...)}),
		"size past end": image(1, []entry{reset, meta(0x10)},
			map[int][]byte{0x10: append([]byte("ASEV"), u32s(28, 1, 1)...)}),
		"unknown section": image(1, []entry{reset, meta(0x800)}, map[int][]byte{0x800: metadata([3]uint32{0x800000, 0x1000, 7})}),
		"unaligned section": image(1, []entry{reset, meta(0x800)},
			map[int][]byte{0x800: metadata([3]uint32{0x800010, 0x1000, 1})}),
		"empty section": image(1, []entry{reset, meta(0x800)}, map[int][]byte{0x800: metadata([3]uint32{0x800000, 0, 1})}),
		"section past 4G": image(1, []entry{reset, meta(0x800)},
			map[int][]byte{0x800: metadata([3]uint32{0xfffff000, 0x2000, 1})}),
		"duplicate entry": image(1, []entry{reset, reset}, nil),
		"sections too large": image(1, []entry{reset, meta(0x800)},
			map[int][]byte{0x800: metadata([3]uint32{0, 0x8000000, 1}, [3]uint32{0x8000000, 0x8001000, 1})}),
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := Parse(img); !errors.Is(err, ErrInvalid) {
				t.Fatalf("error %v, want ErrInvalid", err)
			}
		})
	}

	t.Run("table size", func(t *testing.T) {
		img := image(1, nil, nil)
		binary.LittleEndian.PutUint16(img[len(img)-footerOffset-entryHeaderSize:], 0xffff)
		if _, err := Parse(img); !errors.Is(err, ErrInvalid) {
			t.Fatalf("error %v, want ErrInvalid", err)
		}
	})
	t.Run("entry size", func(t *testing.T) {
		img := image(1, []entry{reset}, nil)
		binary.LittleEndian.PutUint16(img[len(img)-footerOffset-2*entryHeaderSize:], 3)
		if _, err := Parse(img); !errors.Is(err, ErrInvalid) {
			t.Fatalf("error %v, want ErrInvalid", err)
		}
	})
}

// TestParseNoFooter: an image without the footer GUID is a firmware
// without SEV support, not a malformed one.
func TestParseNoFooter(t *testing.T) {
	f, err := Parse(make([]byte, PageSize))
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := f.ResetEIP(); ok || len(f.Sections()) != 0 {
		t.Fatal("entries found in an image without a footer table")
	}
}

// TestParseUpstreamFixtures parses sev-snp-measure's edk2-stable202405
// firmware suffixes: the AmdSev build has the kernel-hashes page, the
// OvmfPkgX64 one has its hash table entry with a zero address.
func TestParseUpstreamFixtures(t *testing.T) {
	dir := filepath.Join(testutil.Fixtures(t), "sev-snp-measure", "tests", "fixtures")
	amd := mustParseFile(t, filepath.Join(dir, "ovmf_AmdSev_suffix.bin"))
	if eip, _ := amd.ResetEIP(); eip != 0x80b004 {
		t.Errorf("AmdSev reset EIP %#x, want 0x80b004", eip)
	}
	if gpa, size, ok := amd.HashTable(); !ok || gpa != 0x810c00 || size != 0x400 {
		t.Errorf("AmdSev hash table %#x+%#x %v", gpa, size, ok)
	}
	var types []SectionType
	for _, s := range amd.Sections() {
		types = append(types, s.Type)
	}
	want := []SectionType{SectionSNPSecMem, SectionSNPSecMem, SectionSNPSecrets, SectionCPUID,
		SectionSVSMCAA, SectionSNPKernelHashes, SectionSNPSecMem}
	if len(types) != len(want) {
		t.Fatalf("AmdSev sections %v, want %v", types, want)
	}
	for i := range want {
		if types[i] != want[i] {
			t.Fatalf("AmdSev sections %v, want %v", types, want)
		}
	}
	x64 := mustParseFile(t, filepath.Join(dir, "ovmf_OvmfX64_suffix.bin"))
	if _, _, ok := x64.HashTable(); ok || x64.HasSection(SectionSNPKernelHashes) {
		t.Error("OvmfX64 has a kernel hash table")
	}
}

// TestParseDebianOVMF parses Debian's ovmf package (edk2 2022.11): its
// 2 MiB OvmfPkgX64 build carries SEV metadata without a kernel-hashes page,
// its 4 MiB builds carry no SEV metadata at all.
func TestParseDebianOVMF(t *testing.T) {
	small := mustParseFile(t, debianOVMF(t, "OVMF/OVMF_CODE.fd"))
	if len(small.Sections()) == 0 || small.HasSection(SectionSNPKernelHashes) {
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

func mustParseFile(t *testing.T, path string) *Firmware {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	f, err := Parse(b)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return f
}

func TestGUID(t *testing.T) {
	// The footer GUID as it sits in the upstream image bytes.
	const raw = "\xde\x82\xb5\x96\xb2\x1f\xf7\x45\xba\xea\xa3\x66\xc5\x5a\x08\x2d"
	if string(FooterGUID[:]) != raw {
		t.Fatalf("footer GUID bytes %x", FooterGUID[:])
	}
	if s := FooterGUID.String(); s != "96b582de-1fb2-45f7-baea-a366c55a082d" {
		t.Fatalf("String %s", s)
	}
	if _, err := ParseGUID("not-a-guid"); err == nil {
		t.Fatal("bad GUID parsed")
	}
}
