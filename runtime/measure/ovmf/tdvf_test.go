package ovmf_test

import (
	"encoding/binary"
	"errors"
	"testing"

	"github.com/cocoon-cc/cocoon/runtime/measure/ovmf"
	"github.com/cocoon-cc/cocoon/runtime/measure/ovmf/ovmftest"
)

func TestTDVFSynthetic(t *testing.T) {
	want := []ovmf.TDVFSection{
		{0, 0x1000, 0xfffff000, 0x1000, ovmf.TDVFBFV, ovmf.TDVFMRExtend},
		{0, 0, 0x809000, 0x2000, ovmf.TDVFTDHOB, 0},
		{0, 0, 0x1000000, 0x100000, ovmf.TDVFPermMem, ovmf.TDVFPageAug},
	}
	f, err := ovmf.Parse(ovmftest.TDVFImage(2, want...))
	if err != nil {
		t.Fatal(err)
	}
	got, err := f.TDVF()
	if err != nil || len(got) != len(want) {
		t.Fatalf("sections %+v %v", got, err)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("section %d: %+v, want %+v", i, got[i], want[i])
		}
	}
	if f, _ := ovmf.Parse(ovmftest.Image(1, nil, nil)); f != nil {
		if s, err := f.TDVF(); s != nil || err != nil {
			t.Errorf("image without TDVF: %v %v", s, err)
		}
	}
}

func TestTDVFInvalid(t *testing.T) {
	bfv := ovmf.TDVFSection{0, 0x1000, 0xfffff000, 0x1000, ovmf.TDVFBFV, ovmf.TDVFMRExtend}
	with := func(mod func(*ovmf.TDVFSection)) []byte {
		s := bfv
		mod(&s)
		return ovmftest.TDVFImage(2, s)
	}
	badGUID := ovmftest.TDVFImage(2, bfv)
	badGUID[len(badGUID)-0x400] ^= 1
	badSig := ovmftest.TDVFImage(2, bfv)
	badSig[len(badSig)-0x400+16] = 'X'
	badLen := ovmftest.TDVFImage(2, bfv)
	binary.LittleEndian.PutUint32(badLen[len(badLen)-0x400+20:], 100)
	for name, img := range map[string][]byte{
		"offset outside":  ovmftest.Image(1, []ovmftest.Entry{{GUID: ovmf.TDXMetadataGUID, Data: ovmftest.U32s(ovmf.PageSize + 1)}}, nil),
		"guid":            badGUID,
		"signature":       badSig,
		"length":          badLen,
		"unknown type":    with(func(s *ovmf.TDVFSection) { s.Type = 9 }),
		"attributes":      with(func(s *ovmf.TDVFSection) { s.Attributes = 4 }),
		"aug and extend":  with(func(s *ovmf.TDVFSection) { s.Attributes = ovmf.TDVFMRExtend | ovmf.TDVFPageAug }),
		"unaligned gpa":   with(func(s *ovmf.TDVFSection) { s.MemoryAddress = 0xfffff800 }),
		"partial page":    with(func(s *ovmf.TDVFSection) { s.MemoryDataSize = 0x800 }),
		"raw over memory": with(func(s *ovmf.TDVFSection) { s.RawDataSize = 0x2000 }),
		"raw past image":  with(func(s *ovmf.TDVFSection) { s.DataOffset = 0x1800 }),
		"beyond 52 bits":  with(func(s *ovmf.TDVFSection) { s.MemoryAddress = 1 << 52 }),
		"too large":       with(func(s *ovmf.TDVFSection) { s.MemoryDataSize = ovmf.MaxSectionBytes + ovmf.PageSize }),
	} {
		t.Run(name, func(t *testing.T) {
			f, err := ovmf.Parse(img)
			if err == nil {
				_, err = f.TDVF()
			}
			if !errors.Is(err, ovmf.ErrInvalid) {
				t.Fatalf("error %v, want ErrInvalid", err)
			}
		})
	}
}

// TestTDVFDebian: Debian's 2 MiB OVMF.fd is also a TDVF: its code volume
// is measured, its variable store, TD HOB and temporary memory only added.
// Its OVMF_CODE.fd carries the same metadata, which points past its end:
// TDX needs the combined image.
func TestTDVFDebian(t *testing.T) {
	code := mustParseFile(t, debianOVMF(t, "OVMF/OVMF_CODE.fd"))
	if _, err := code.TDVF(); !errors.Is(err, ovmf.ErrInvalid) {
		t.Errorf("OVMF_CODE.fd TDVF: %v, want ErrInvalid", err)
	}
	f := mustParseFile(t, debianOVMF(t, "ovmf/OVMF.fd"))
	sections, err := f.TDVF()
	if err != nil {
		t.Fatal(err)
	}
	var bfv, cfv, hob int
	for _, s := range sections {
		switch s.Type {
		case ovmf.TDVFBFV:
			bfv++
			if s.Attributes != ovmf.TDVFMRExtend || uint64(s.DataOffset)+uint64(s.RawDataSize) != uint64(len(f.Data())) ||
				s.MemoryAddress+s.MemoryDataSize != ovmf.FourGiB {
				t.Errorf("BFV %+v: want the measured image tail ending at 4 GiB", s)
			}
		case ovmf.TDVFCFV:
			cfv++
		case ovmf.TDVFTDHOB:
			hob++
		}
	}
	if bfv != 1 || cfv != 1 || hob != 1 {
		t.Errorf("sections %+v: want one BFV, CFV and TD HOB", sections)
	}
}
