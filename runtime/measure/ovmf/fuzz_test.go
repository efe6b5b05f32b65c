package ovmf_test

import (
	"errors"
	"testing"

	"github.com/cocoon-cc/cocoon/runtime/measure/ovmf"
	"github.com/cocoon-cc/cocoon/runtime/measure/ovmf/ovmftest"
)

// FuzzParse: any image parses or fails with ErrInvalid, and what parses
// has SEV sections that are whole pages below 4 GiB and TDVF sections
// whose data lies in the image. The fuzzer mutates the
// image's tail, where the footer table and SEV metadata live; the tail is
// right-aligned in whole zero pages, so that short inputs stay images.
func FuzzParse(f *testing.F) {
	for _, b := range [][]byte{ovmftest.AmdSev(), ovmftest.OvmfX64()} {
		f.Add(b[len(b)-0x600:]) // the table and the SEV metadata block
	}
	small := ovmftest.Image(1, []ovmftest.Entry{{GUID: ovmf.SEVESResetBlockGUID, Data: ovmftest.U32s(0x80b004)}, {GUID: ovmf.SEVMetadataGUID, Data: ovmftest.U32s(0x100)}},
		map[int][]byte{0x100: ovmftest.Metadata([3]uint32{0x800000, 0x1000, 1})})
	f.Add(small[len(small)-0x100:])
	td := ovmftest.TDVFImage(2, ovmf.TDVFSection{0, 0x1000, 0xfffff000, 0x1000, ovmf.TDVFBFV, ovmf.TDVFMRExtend})
	f.Add(td[len(td)-0x400:])
	f.Fuzz(func(t *testing.T, tail []byte) {
		img := make([]byte, (len(tail)+ovmf.PageSize-1)/ovmf.PageSize*ovmf.PageSize)
		copy(img[len(img)-len(tail):], tail)
		fw, err := ovmf.Parse(img)
		if err != nil {
			if !errors.Is(err, ovmf.ErrInvalid) {
				t.Fatalf("error %v does not wrap ErrInvalid", err)
			}
			return
		}
		for _, s := range fw.Sections() {
			if s.GPA%ovmf.PageSize != 0 || s.Size%ovmf.PageSize != 0 || s.Size == 0 || uint64(s.GPA)+uint64(s.Size) > ovmf.FourGiB {
				t.Fatalf("section %+v accepted", s)
			}
		}
		fw.ResetEIP()
		fw.HashTable()
		tdvf, err := fw.TDVF()
		if err != nil && !errors.Is(err, ovmf.ErrInvalid) {
			t.Fatalf("TDVF error %v does not wrap ErrInvalid", err)
		}
		for _, s := range tdvf {
			if s.MemoryAddress%ovmf.PageSize != 0 || s.MemoryDataSize%ovmf.PageSize != 0 || uint64(s.RawDataSize) > s.MemoryDataSize ||
				uint64(s.DataOffset)+uint64(s.RawDataSize) > uint64(len(img)) {
				t.Fatalf("TDVF section %+v accepted", s)
			}
		}
	})
}
