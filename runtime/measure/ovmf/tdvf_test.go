package ovmf

import (
	"encoding/binary"
	"errors"
	"testing"
)

// tdvfBlock is TDVF metadata (its GUID, then the descriptor) with the
// given sections.
func tdvfBlock(sections ...TDVFSection) []byte {
	b := append(tdvfDescriptorGUID[:], "TDVF"...)
	b = append(b, u32s(uint32(16+32*len(sections)), 1, uint32(len(sections)))...)
	for _, s := range sections {
		var e [32]byte
		binary.LittleEndian.PutUint32(e[0:], s.DataOffset)
		binary.LittleEndian.PutUint32(e[4:], s.RawDataSize)
		binary.LittleEndian.PutUint64(e[8:], s.MemoryAddress)
		binary.LittleEndian.PutUint64(e[16:], s.MemoryDataSize)
		binary.LittleEndian.PutUint32(e[24:], uint32(s.Type))
		binary.LittleEndian.PutUint32(e[28:], s.Attributes)
		b = append(b, e[:]...)
	}
	return b
}

// tdvfImage is a pages-page image whose TDVF metadata, 0x400 bytes before
// the end, lists sections.
func tdvfImage(pages int, sections ...TDVFSection) []byte {
	return image(pages, []entry{{TDXMetadataGUID, u32s(0x400 - 16)}}, map[int][]byte{0x400: tdvfBlock(sections...)})
}

func TestTDVFSynthetic(t *testing.T) {
	want := []TDVFSection{
		{0, 0x1000, 0xfffff000, 0x1000, TDVFBFV, TDVFMRExtend},
		{0, 0, 0x809000, 0x2000, TDVFTDHOB, 0},
		{0, 0, 0x1000000, 0x100000, TDVFPermMem, TDVFPageAug},
	}
	f, err := Parse(tdvfImage(2, want...))
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
	if f, _ := Parse(image(1, nil, nil)); f != nil {
		if s, err := f.TDVF(); s != nil || err != nil {
			t.Errorf("image without TDVF: %v %v", s, err)
		}
	}
}

func TestTDVFInvalid(t *testing.T) {
	bfv := TDVFSection{0, 0x1000, 0xfffff000, 0x1000, TDVFBFV, TDVFMRExtend}
	with := func(mod func(*TDVFSection)) []byte {
		s := bfv
		mod(&s)
		return tdvfImage(2, s)
	}
	badGUID := tdvfImage(2, bfv)
	badGUID[len(badGUID)-0x400] ^= 1
	badSig := tdvfImage(2, bfv)
	badSig[len(badSig)-0x400+16] = 'X'
	badLen := tdvfImage(2, bfv)
	binary.LittleEndian.PutUint32(badLen[len(badLen)-0x400+20:], 100)
	for name, img := range map[string][]byte{
		"offset outside":  image(1, []entry{{TDXMetadataGUID, u32s(PageSize + 1)}}, nil),
		"guid":            badGUID,
		"signature":       badSig,
		"length":          badLen,
		"unknown type":    with(func(s *TDVFSection) { s.Type = 9 }),
		"attributes":      with(func(s *TDVFSection) { s.Attributes = 4 }),
		"aug and extend":  with(func(s *TDVFSection) { s.Attributes = TDVFMRExtend | TDVFPageAug }),
		"unaligned gpa":   with(func(s *TDVFSection) { s.MemoryAddress = 0xfffff800 }),
		"partial page":    with(func(s *TDVFSection) { s.MemoryDataSize = 0x800 }),
		"raw over memory": with(func(s *TDVFSection) { s.RawDataSize = 0x2000 }),
		"raw past image":  with(func(s *TDVFSection) { s.DataOffset = 0x1800 }),
		"beyond 52 bits":  with(func(s *TDVFSection) { s.MemoryAddress = 1 << 52 }),
		"too large":       with(func(s *TDVFSection) { s.MemoryDataSize = MaxSectionBytes + PageSize }),
	} {
		t.Run(name, func(t *testing.T) {
			f, err := Parse(img)
			if err == nil {
				_, err = f.TDVF()
			}
			if !errors.Is(err, ErrInvalid) {
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
	if _, err := code.TDVF(); !errors.Is(err, ErrInvalid) {
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
		case TDVFBFV:
			bfv++
			if s.Attributes != TDVFMRExtend || uint64(s.DataOffset)+uint64(s.RawDataSize) != uint64(len(f.Data())) ||
				s.MemoryAddress+s.MemoryDataSize != FourGiB {
				t.Errorf("BFV %+v: want the measured image tail ending at 4 GiB", s)
			}
		case TDVFCFV:
			cfv++
		case TDVFTDHOB:
			hob++
		}
	}
	if bfv != 1 || cfv != 1 || hob != 1 {
		t.Errorf("sections %+v: want one BFV, CFV and TD HOB", sections)
	}
}
