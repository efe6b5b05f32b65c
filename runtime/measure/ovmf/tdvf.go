package ovmf

import (
	"encoding/binary"
	"fmt"
)

// TDXMetadataGUID points at the TDVF metadata of a firmware built for
// Intel TDX (edk2 IntelTdxMetadata.asm).
var TDXMetadataGUID = MustParseGUID("e47a6535-984a-4798-865e-4685a7bf8ec2")

// TDVFSectionType is the kind of a TDVF metadata section (TDVF design
// guide, "TDVF metadata").
type TDVFSectionType uint32

// TDVF section types.
const (
	TDVFBFV          TDVFSectionType = 0 // boot firmware volume: the firmware code
	TDVFCFV          TDVFSectionType = 1 // configuration firmware volume: the variable store
	TDVFTDHOB        TDVFSectionType = 2 // the hand-off blocks the VMM writes
	TDVFTempMem      TDVFSectionType = 3 // temporary memory for the early firmware
	TDVFPermMem      TDVFSectionType = 4
	TDVFPayload      TDVFSectionType = 5
	TDVFPayloadParam TDVFSectionType = 6
)

// TDVF section attributes.
const (
	// TDVFMRExtend: the VMM extends the section's contents into MRTD.
	TDVFMRExtend = 1 << 0
	// TDVFPageAug: the guest accepts the pages later; the VMM does not add
	// them (nor measure their addresses) at build time.
	TDVFPageAug = 1 << 1
)

// TDVFSection is one TDVF metadata section: RawDataSize bytes of the image
// at DataOffset, loaded at MemoryAddress into MemoryDataSize bytes of
// guest memory (the rest zero).
type TDVFSection struct {
	DataOffset     uint32
	RawDataSize    uint32
	MemoryAddress  uint64
	MemoryDataSize uint64
	Type           TDVFSectionType
	Attributes     uint32
}

// TDVF metadata layout: GUID e9eaf9f3-168e-44d5-a8eb-7f4d8738f6ae, then the
// descriptor "TDVF", length (u32, descriptor and sections), version (u32,
// 1), section count (u32), then 32-byte sections.
const (
	tdvfHeaderSize  = 16
	tdvfSectionSize = 32
	tdvfVersion     = 1
)

// TDVFDescriptorGUID opens the TDVF metadata block.
var TDVFDescriptorGUID = MustParseGUID("e9eaf9f3-168e-44d5-a8eb-7f4d8738f6ae")

// TDVF parses the TDVF metadata sections, in image order, which is the
// order the VMM adds them to the TD; nil for a firmware without TDX
// support. Only a TDX launch reads them: images cut to their tail (as test
// fixtures are) have SEV metadata but TDVF sections pointing outside.
func (f *Firmware) TDVF() ([]TDVFSection, error) {
	ref, ok := f.table[TDXMetadataGUID]
	if !ok {
		return nil, nil
	}
	data := f.data
	fromEnd := uint64(binary.LittleEndian.Uint32(ref))
	if fromEnd > uint64(len(data))-16 || fromEnd < tdvfHeaderSize {
		return nil, fmt.Errorf("%w: TDVF metadata offset %#x outside the image", ErrInvalid, fromEnd)
	}
	start := uint64(len(data)) - fromEnd
	if GUID(data[start-16:start]) != TDVFDescriptorGUID {
		return nil, fmt.Errorf("%w: TDVF metadata GUID %s", ErrInvalid, GUID(data[start-16:start]))
	}
	hdr := data[start:]
	if string(hdr[:4]) != "TDVF" {
		return nil, fmt.Errorf("%w: TDVF signature %q", ErrInvalid, hdr[:4])
	}
	size := uint64(binary.LittleEndian.Uint32(hdr[4:]))
	version := binary.LittleEndian.Uint32(hdr[8:])
	count := uint64(binary.LittleEndian.Uint32(hdr[12:]))
	if version != tdvfVersion {
		return nil, fmt.Errorf("%w: TDVF metadata version %d, want %d", ErrInvalid, version, tdvfVersion)
	}
	if size != tdvfHeaderSize+count*tdvfSectionSize || size > uint64(len(hdr)) {
		return nil, fmt.Errorf("%w: TDVF metadata of %d bytes with %d sections", ErrInvalid, size, count)
	}
	sections := make([]TDVFSection, count)
	var added uint64
	for i := range sections {
		b := hdr[tdvfHeaderSize+i*tdvfSectionSize:]
		s := TDVFSection{
			DataOffset: binary.LittleEndian.Uint32(b), RawDataSize: binary.LittleEndian.Uint32(b[4:]),
			MemoryAddress: binary.LittleEndian.Uint64(b[8:]), MemoryDataSize: binary.LittleEndian.Uint64(b[16:]),
			Type: TDVFSectionType(binary.LittleEndian.Uint32(b[24:])), Attributes: binary.LittleEndian.Uint32(b[28:]),
		}
		if err := s.check(len(data)); err != nil {
			return nil, fmt.Errorf("%w: TDVF section %d: %v", ErrInvalid, i, err)
		}
		if s.Attributes&TDVFPageAug == 0 {
			if added += s.MemoryDataSize; added > MaxSectionBytes {
				return nil, fmt.Errorf("%w: TDVF sections add more than %d bytes", ErrInvalid, MaxSectionBytes)
			}
		}
		sections[i] = s
	}
	return sections, nil
}

func (s TDVFSection) check(imageSize int) error {
	if s.Type > TDVFPayloadParam {
		return fmt.Errorf("unknown type %d", s.Type)
	}
	if s.Attributes&^(TDVFMRExtend|TDVFPageAug) != 0 || s.Attributes == TDVFMRExtend|TDVFPageAug {
		return fmt.Errorf("attributes %#x", s.Attributes)
	}
	if s.MemoryAddress%PageSize != 0 || s.MemoryDataSize%PageSize != 0 || s.MemoryDataSize > MaxSectionBytes {
		return fmt.Errorf("memory %#x size %#x is not whole pages below the limit", s.MemoryAddress, s.MemoryDataSize)
	}
	if s.MemoryAddress > 1<<52-s.MemoryDataSize {
		return fmt.Errorf("memory %#x size %#x beyond the physical address width", s.MemoryAddress, s.MemoryDataSize)
	}
	if uint64(s.RawDataSize) > s.MemoryDataSize || uint64(s.DataOffset)+uint64(s.RawDataSize) > uint64(imageSize) {
		return fmt.Errorf("raw data %#x+%#x does not fit the image or its memory (%#x)", s.DataOffset, s.RawDataSize, s.MemoryDataSize)
	}
	return nil
}
