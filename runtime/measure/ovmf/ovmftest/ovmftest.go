// Package ovmftest builds synthetic OVMF firmware images for tests: the
// footer GUID table, SEV metadata and TDVF metadata laid out as edk2 lays
// them out, with made-up addresses and contents.
package ovmftest

import (
	"crypto/sha256"
	"encoding/binary"

	"github.com/cocoon-cc/cocoon/runtime/measure/ovmf"
)

// Entry is a footer table entry.
type Entry struct {
	GUID ovmf.GUID
	Data []byte
}

// Layout of the table's tail: its footer entry ends 32 bytes before the
// image end; each entry is its data, its size (u16) and its GUID.
const (
	footerOffset    = 32
	entryHeaderSize = 2 + 16
)

// Image builds a firmware image of pages pages whose footer table holds
// entries (the first one nearest the footer), with extra bytes written at
// their offsets from the image end.
func Image(pages int, entries []Entry, extra map[int][]byte) []byte {
	b := make([]byte, pages*ovmf.PageSize)
	end := len(b) - footerOffset
	pos := end - entryHeaderSize
	total := entryHeaderSize
	for _, e := range entries {
		n := len(e.Data) + entryHeaderSize
		pos -= n
		copy(b[pos:], e.Data)
		binary.LittleEndian.PutUint16(b[pos+len(e.Data):], uint16(n))
		copy(b[pos+len(e.Data)+2:], e.GUID[:])
		total += n
	}
	binary.LittleEndian.PutUint16(b[end-entryHeaderSize:], uint16(total))
	copy(b[end-16:], ovmf.FooterGUID[:])
	for fromEnd, v := range extra {
		copy(b[len(b)-fromEnd:], v)
	}
	return b
}

// U32s encodes v little-endian.
func U32s(v ...uint32) []byte {
	b := make([]byte, 4*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint32(b[4*i:], x)
	}
	return b
}

// Metadata is an "ASEV" block with the given sections (gpa, size, type).
func Metadata(sections ...[3]uint32) []byte {
	b := append([]byte("ASEV"), U32s(uint32(16+12*len(sections)), 1, uint32(len(sections)))...)
	for _, s := range sections {
		b = append(b, U32s(s[0], s[1], s[2])...)
	}
	return b
}

// TDVFBlock is TDVF metadata (its GUID, then the descriptor) with the
// given sections.
func TDVFBlock(sections ...ovmf.TDVFSection) []byte {
	b := append(ovmf.TDVFDescriptorGUID[:], "TDVF"...)
	b = append(b, U32s(uint32(16+32*len(sections)), 1, uint32(len(sections)))...)
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

// TDVFImage is a pages-page image whose TDVF metadata, 0x400 bytes before
// the end, lists sections.
func TDVFImage(pages int, sections ...ovmf.TDVFSection) []byte {
	return Image(pages, []Entry{{ovmf.TDXMetadataGUID, U32s(0x400 - 16)}}, map[int][]byte{0x400: TDVFBlock(sections...)})
}

// Where the synthetic SNP firmwares put what the VMM reads.
const (
	ResetEIP      = 0x80b004 // the application processors' reset vector
	HashTableGPA  = 0x810c00 // the kernel hashes table, inside the hashes page
	HashTableSize = 0x400
)

// AmdSev is a 2-page image shaped like edk2's OvmfPkg/AmdSev build: SEV
// metadata with a kernel-hashes page, so it measures a direct-boot kernel.
func AmdSev() []byte {
	return snpImage(HashTableGPA, [3]uint32{0x800000, 0x9000, 1}, [3]uint32{0x80a000, 0x3000, 1},
		[3]uint32{0x80d000, 0x1000, 2}, [3]uint32{0x80e000, 0x1000, 3}, [3]uint32{0x80f000, 0x1000, 4},
		[3]uint32{0x810000, 0x1000, 0x10}, [3]uint32{0x811000, 0xf000, 1})
}

// OvmfX64 is a 2-page image shaped like edk2's OvmfPkgX64 build: SEV
// metadata without a kernel-hashes page, its hash table entry zero.
func OvmfX64() []byte {
	return snpImage(0, [3]uint32{0x800000, 0x9000, 1}, [3]uint32{0x80a000, 0x3000, 1},
		[3]uint32{0x80d000, 0x1000, 2}, [3]uint32{0x80e000, 0x1000, 3}, [3]uint32{0x811000, 0xf000, 1})
}

// snpImage fills the first page with bytes derived from a fixed seed (the
// firmware code the digest covers) and writes the footer table and SEV
// metadata into the second.
func snpImage(hashTable uint32, sections ...[3]uint32) []byte {
	var size uint32
	if hashTable != 0 {
		size = HashTableSize
	}
	b := Image(2, []Entry{
		{ovmf.SEVESResetBlockGUID, U32s(ResetEIP)},
		{ovmf.SEVHashTableGUID, U32s(hashTable, size)},
		{ovmf.SEVMetadataGUID, U32s(0x800)},
	}, map[int][]byte{0x800: Metadata(sections...)})
	for i, h := 0, sha256.Sum256([]byte("cocoon ovmftest")); i < ovmf.PageSize; i += len(h) {
		copy(b[i:], h[:])
		h = sha256.Sum256(h[:])
	}
	return b
}
