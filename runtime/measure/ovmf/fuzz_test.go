package ovmf

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/cocoon-cc/cocoon/internal/testutil"
)

// FuzzParse: any image parses or fails with ErrInvalid, and what parses
// has sections that are whole pages below 4 GiB.
func FuzzParse(f *testing.F) {
	dir := filepath.Join(testutil.Fixtures(f), "sev-snp-measure", "tests", "fixtures")
	for _, name := range []string{"ovmf_AmdSev_suffix.bin", "ovmf_OvmfX64_suffix.bin"} {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add(image(1, []entry{{SEVESResetBlockGUID, u32s(0x80b004)}, {SEVMetadataGUID, u32s(0x800)}},
		map[int][]byte{0x800: metadata([3]uint32{0x800000, 0x1000, 1})}))
	f.Fuzz(func(t *testing.T, data []byte) {
		fw, err := Parse(data)
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
	})
}
