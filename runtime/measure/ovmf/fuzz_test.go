package ovmf

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/cocoon-cc/cocoon/internal/testutil"
)

// FuzzParse: any image parses or fails with ErrInvalid, and what parses
// has SEV sections that are whole pages below 4 GiB and TDVF sections
// whose data lies in the image. The fuzzer mutates the
// image's tail, where the footer table and SEV metadata live; the tail is
// right-aligned in whole zero pages, so that short inputs stay images.
func FuzzParse(f *testing.F) {
	dir := filepath.Join(testutil.Fixtures(f), "sev-snp-measure", "tests", "fixtures")
	for _, name := range []string{"ovmf_AmdSev_suffix.bin", "ovmf_OvmfX64_suffix.bin"} {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b[len(b)-0x600:]) // the table and the SEV metadata block
	}
	small := image(1, []entry{{SEVESResetBlockGUID, u32s(0x80b004)}, {SEVMetadataGUID, u32s(0x100)}},
		map[int][]byte{0x100: metadata([3]uint32{0x800000, 0x1000, 1})})
	f.Add(small[len(small)-0x100:])
	td := tdvfImage(2, TDVFSection{0, 0x1000, 0xfffff000, 0x1000, TDVFBFV, TDVFMRExtend})
	f.Add(td[len(td)-0x400:])
	f.Fuzz(func(t *testing.T, tail []byte) {
		img := make([]byte, (len(tail)+PageSize-1)/PageSize*PageSize)
		copy(img[len(img)-len(tail):], tail)
		fw, err := Parse(img)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error %v does not wrap ErrInvalid", err)
			}
			return
		}
		for _, s := range fw.Sections() {
			if s.GPA%PageSize != 0 || s.Size%PageSize != 0 || s.Size == 0 || uint64(s.GPA)+uint64(s.Size) > FourGiB {
				t.Fatalf("section %+v accepted", s)
			}
		}
		fw.ResetEIP()
		fw.HashTable()
		tdvf, err := fw.TDVF()
		if err != nil && !errors.Is(err, ErrInvalid) {
			t.Fatalf("TDVF error %v does not wrap ErrInvalid", err)
		}
		for _, s := range tdvf {
			if s.MemoryAddress%PageSize != 0 || s.MemoryDataSize%PageSize != 0 || uint64(s.RawDataSize) > s.MemoryDataSize ||
				uint64(s.DataOffset)+uint64(s.RawDataSize) > uint64(len(img)) {
				t.Fatalf("TDVF section %+v accepted", s)
			}
		}
	})
}
