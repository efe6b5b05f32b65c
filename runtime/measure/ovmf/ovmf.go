// Package ovmf parses what a VMM reads from an OVMF (edk2) firmware image
// before it launches a confidential guest: the GUIDed table in the
// firmware's footer, the SEV metadata that lists the pages the VMM adds to
// an SEV-SNP guest besides the firmware itself, and the TDVF metadata that
// lists the pages it adds to an Intel TDX guest.
//
// The image is untrusted input: every offset and size is checked, and a
// malformed image yields an error wrapping ErrInvalid, never a panic.
package ovmf

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
)

// PageSize is the granularity of every guest page the VMM adds.
const PageSize = 4096

// MaxSize bounds a firmware image: OVMF images are 1 to 4 MiB, and the
// whole image sits below 4 GiB.
const MaxSize = 32 << 20

// MaxSectionBytes bounds what the SEV metadata sections cover together:
// each page costs the measurement a hash, and OVMF lists well under 1 MiB.
const MaxSectionBytes = 256 << 20

// FourGiB is where a -bios firmware image ends in guest physical memory.
const FourGiB = 1 << 32

// ErrInvalid is wrapped by every error about a malformed image.
var ErrInvalid = errors.New("invalid OVMF firmware")

// GUIDs of the footer table entries a confidential VMM reads.
var (
	// FooterGUID marks the end of the table, 32 bytes before the image end.
	FooterGUID = MustParseGUID("96b582de-1fb2-45f7-baea-a366c55a082d")
	// SEVHashTableGUID locates the page where QEMU writes the hashes of
	// the kernel, initrd and command line for measured direct boot.
	SEVHashTableGUID = MustParseGUID("7255371f-3a3b-4b04-927b-1da6efa8d454")
	// SEVESResetBlockGUID holds the reset vector of the application
	// processors of an SEV-ES/SNP guest.
	SEVESResetBlockGUID = MustParseGUID("00f771de-1a7e-4fcb-890e-68c77e2fb44e")
	// SEVMetadataGUID points at the SEV metadata ("ASEV") block.
	SEVMetadataGUID = MustParseGUID("dc886566-984a-4798-a75e-5585a7bf67cc")
)

// SectionType is the kind of an SEV metadata section, as OVMF's
// OvmfSevMetadata.asm declares them.
type SectionType uint32

// Section types.
const (
	SectionSNPSecMem       SectionType = 1    // pre-validated memory OVMF's SEC phase uses
	SectionSNPSecrets      SectionType = 2    // the SNP secrets page
	SectionCPUID           SectionType = 3    // the SNP CPUID page
	SectionSVSMCAA         SectionType = 4    // the SVSM calling area
	SectionSNPKernelHashes SectionType = 0x10 // the page QEMU writes the kernel hashes into
)

func (t SectionType) String() string {
	switch t {
	case SectionSNPSecMem:
		return "SNP_SEC_MEMORY"
	case SectionSNPSecrets:
		return "SNP_SECRETS"
	case SectionCPUID:
		return "CPUID"
	case SectionSVSMCAA:
		return "SVSM_CAA"
	case SectionSNPKernelHashes:
		return "SNP_KERNEL_HASHES"
	}
	return fmt.Sprintf("section type %#x", uint32(t))
}

// Section is one SEV metadata section: a page-aligned guest physical range.
type Section struct {
	GPA  uint32
	Size uint32
	Type SectionType
}

// Firmware is a parsed OVMF image.
type Firmware struct {
	data     []byte
	table    map[GUID][]byte
	sections []Section
}

// Parse checks an OVMF image and reads its footer table and SEV metadata;
// TDVF returns the TDVF metadata. An image without a footer table is valid
// (a build without confidential computing support); its table and sections
// are empty. data is kept, not copied.
func Parse(data []byte) (*Firmware, error) {
	if len(data) > MaxSize {
		return nil, fmt.Errorf("%w: more than %d bytes", ErrInvalid, MaxSize)
	}
	if len(data) == 0 || len(data)%PageSize != 0 {
		return nil, fmt.Errorf("%w: size %d is not a non-zero multiple of %d", ErrInvalid, len(data), PageSize)
	}
	table, err := parseTable(data)
	if err != nil {
		return nil, err
	}
	f := &Firmware{data: data, table: table}
	if f.sections, err = parseMetadata(data, table); err != nil {
		return nil, err
	}
	return f, nil
}

// ErrNoImage is returned by Load when given neither an image nor a path.
var ErrNoImage = errors.New("no firmware image given")

// Load parses image, or when it is nil the image at path.
func Load(image []byte, path string) (*Firmware, error) {
	switch {
	case image != nil:
		return Parse(image)
	case path != "":
		return ReadFile(path)
	}
	return nil, ErrNoImage
}

// ReadFile reads and parses the image at path.
func ReadFile(path string) (*Firmware, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	// One byte over the limit tells a too-large image from one at it.
	data, err := io.ReadAll(io.LimitReader(f, MaxSize+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	fw, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return fw, nil
}

// Data is the whole image, as the VMM maps it.
func (f *Firmware) Data() []byte { return f.data }

// GPA is the guest physical address of the image's first byte: the image
// ends at 4 GiB.
func (f *Firmware) GPA() uint64 { return FourGiB - uint64(len(f.data)) }

// Entry returns the data of the footer table entry with the given GUID.
func (f *Firmware) Entry(g GUID) ([]byte, bool) {
	b, ok := f.table[g]
	return b, ok
}

// Sections are the SEV metadata sections in the order the image lists
// them, which is the order the VMM adds them to the guest.
func (f *Firmware) Sections() []Section { return f.sections }

// HasSection reports whether the metadata lists a section of type t.
func (f *Firmware) HasSection(t SectionType) bool {
	for _, s := range f.sections {
		if s.Type == t {
			return true
		}
	}
	return false
}

// ResetEIP is the reset vector of the SEV-ES/SNP application processors.
func (f *Firmware) ResetEIP() (uint32, bool) {
	b, ok := f.table[SEVESResetBlockGUID]
	if !ok {
		return 0, false
	}
	return binary.LittleEndian.Uint32(b), true
}

// HashTable is where QEMU writes the kernel hashes table: its guest
// physical address and the room OVMF reserved for it. Builds without
// measured direct boot carry the entry with a zero address.
func (f *Firmware) HashTable() (gpa, size uint32, ok bool) {
	b, ok := f.table[SEVHashTableGUID]
	if !ok {
		return 0, 0, false
	}
	gpa, size = binary.LittleEndian.Uint32(b), binary.LittleEndian.Uint32(b[4:])
	return gpa, size, gpa != 0
}

// entryHeaderSize is an entry's trailer: its size (u16) then its GUID.
const entryHeaderSize = 2 + 16

// footerOffset is how far before the image end the footer entry ends.
const footerOffset = 32

// minEntrySize is what each entry the accessors read must carry.
var minEntrySize = map[GUID]int{SEVESResetBlockGUID: 4, SEVHashTableGUID: 8, SEVMetadataGUID: 4, TDXMetadataGUID: 4}

// parseTable walks the footer table backwards from its footer entry: each
// entry is its data followed by its size (covering data and trailer) and
// GUID, and the footer's size covers the whole table.
func parseTable(data []byte) (map[GUID][]byte, error) {
	table := map[GUID][]byte{}
	end := len(data) - footerOffset
	start := end - entryHeaderSize
	if start < 0 {
		return table, nil
	}
	var footer GUID
	copy(footer[:], data[start+2:end])
	if footer != FooterGUID {
		return table, nil
	}
	size := int(binary.LittleEndian.Uint16(data[start:]))
	if size < entryHeaderSize || size-entryHeaderSize > start {
		return nil, fmt.Errorf("%w: footer table size %d does not fit", ErrInvalid, size)
	}
	body := data[start-(size-entryHeaderSize) : start]
	for len(body) >= entryHeaderSize {
		trailer := body[len(body)-entryHeaderSize:]
		n := int(binary.LittleEndian.Uint16(trailer))
		if n < entryHeaderSize || n > len(body) {
			return nil, fmt.Errorf("%w: footer table entry size %d (%d bytes left)", ErrInvalid, n, len(body))
		}
		var g GUID
		copy(g[:], trailer[2:])
		if _, dup := table[g]; dup {
			return nil, fmt.Errorf("%w: footer table entry %s twice", ErrInvalid, g)
		}
		entry := body[len(body)-n : len(body)-entryHeaderSize]
		if min := minEntrySize[g]; len(entry) < min {
			return nil, fmt.Errorf("%w: footer table entry %s has %d bytes, want %d", ErrInvalid, g, len(entry), min)
		}
		table[g] = entry
		body = body[:len(body)-n]
	}
	return table, nil
}

// SEV metadata block layout: "ASEV", size (u32, header and sections),
// version (u32, 1), section count (u32), then 12-byte sections.
const (
	metadataHeaderSize  = 16
	metadataSectionSize = 12
	metadataVersion     = 1
)

func parseMetadata(data []byte, table map[GUID][]byte) ([]Section, error) {
	ref, ok := table[SEVMetadataGUID]
	if !ok {
		return nil, nil
	}
	fromEnd := uint64(binary.LittleEndian.Uint32(ref))
	if fromEnd > uint64(len(data)) || fromEnd < metadataHeaderSize {
		return nil, fmt.Errorf("%w: SEV metadata offset %#x outside the image", ErrInvalid, fromEnd)
	}
	hdr := data[uint64(len(data))-fromEnd:]
	if string(hdr[:4]) != "ASEV" {
		return nil, fmt.Errorf("%w: SEV metadata signature %q, want \"ASEV\"", ErrInvalid, hdr[:4])
	}
	size := uint64(binary.LittleEndian.Uint32(hdr[4:]))
	version := binary.LittleEndian.Uint32(hdr[8:])
	count := uint64(binary.LittleEndian.Uint32(hdr[12:]))
	if version != metadataVersion {
		return nil, fmt.Errorf("%w: SEV metadata version %d, want %d", ErrInvalid, version, metadataVersion)
	}
	if size < metadataHeaderSize || size > uint64(len(hdr)) || count > (size-metadataHeaderSize)/metadataSectionSize {
		return nil, fmt.Errorf("%w: SEV metadata of %d bytes with %d sections does not fit", ErrInvalid, size, count)
	}
	sections := make([]Section, count)
	var total uint64
	for i := range sections {
		b := hdr[metadataHeaderSize+i*metadataSectionSize:]
		s := Section{GPA: binary.LittleEndian.Uint32(b), Size: binary.LittleEndian.Uint32(b[4:]),
			Type: SectionType(binary.LittleEndian.Uint32(b[8:]))}
		if err := s.check(); err != nil {
			return nil, fmt.Errorf("%w: SEV metadata section %d: %v", ErrInvalid, i, err)
		}
		if total += uint64(s.Size); total > MaxSectionBytes {
			return nil, fmt.Errorf("%w: SEV metadata sections cover more than %d bytes", ErrInvalid, MaxSectionBytes)
		}
		sections[i] = s
	}
	return sections, nil
}

func (s Section) check() error {
	switch s.Type {
	case SectionSNPSecMem, SectionSNPSecrets, SectionCPUID, SectionSVSMCAA, SectionSNPKernelHashes:
	default:
		return fmt.Errorf("unknown %s", s.Type)
	}
	if s.GPA%PageSize != 0 || s.Size%PageSize != 0 || s.Size == 0 {
		return fmt.Errorf("%s at %#x size %#x is not whole pages", s.Type, s.GPA, s.Size)
	}
	if uint64(s.GPA)+uint64(s.Size) > FourGiB {
		return fmt.Errorf("%s at %#x size %#x crosses 4 GiB", s.Type, s.GPA, s.Size)
	}
	return nil
}
