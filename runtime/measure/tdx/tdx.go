// Package tdx computes MRTD, the build-time measurement of an Intel TDX
// guest, for a TDVF (OVMF) firmware, before the guest runs, so that it can
// be registered as a reference value.
//
// The VMM adds each TDVF metadata section's pages to the TD with
// TDH.MEM.PAGE.ADD, which extends MRTD with the page's GPA, and for
// sections marked MR_EXTEND measures their contents with TDH.MR.EXTEND,
// 256 bytes at a time. MRTD is SHA-384 over the 128-byte blocks these
// SEAMCALLs hash (Intel TDX module ABI), in that order.
package tdx

import (
	"crypto/sha512"
	"encoding/binary"
	"errors"
	"hash"

	"github.com/cocoon-cc/cocoon/runtime/measure/ovmf"
)

// DigestSize is the size of MRTD (SHA-384).
const DigestSize = sha512.Size384

// ReferenceValue is the reference value Trustee's default policy compares
// the TDX quote's MRTD with.
const ReferenceValue = "mr_td"

// ErrNotTDXFirmware is returned for an image without TDVF metadata. A
// malformed image yields an error wrapping ovmf.ErrInvalid.
var ErrNotTDXFirmware = errors.New("firmware does not support TDX")

// Options are the launch inputs MRTD depends on.
type Options struct {
	// OVMF is the TDVF image QEMU loads with -bios; OVMFPath is read when
	// OVMF is nil.
	OVMF     []byte
	OVMFPath string
	// TwoPass selects the order of TDX host stacks that add every page of
	// a section before extending any of its contents. Upstream KVM adds
	// and extends page by page, the default.
	TwoPass bool
}

// blockSize is the MRTD extension buffer; extendSize is TDH.MR.EXTEND's
// granularity.
const (
	blockSize  = 128
	extendSize = 256
)

// MRTD computes the MRTD of a TD that QEMU builds from the firmware.
func MRTD(opts Options) ([DigestSize]byte, error) {
	var mrtd [DigestSize]byte
	fw, err := ovmf.Load(opts.OVMF, opts.OVMFPath)
	if err != nil {
		return mrtd, err
	}
	sections, err := fw.TDVF()
	if err != nil {
		return mrtd, err
	}
	if len(sections) == 0 {
		return mrtd, ErrNotTDXFirmware
	}
	m := &measurer{h: sha512.New384()}
	for _, s := range sections {
		m.section(fw.Data(), s, opts.TwoPass)
	}
	m.h.Sum(mrtd[:0])
	return mrtd, nil
}

// measurer hashes the SEAMCALL blocks; its buffers spare an allocation
// per block.
type measurer struct {
	h   hash.Hash
	blk [blockSize]byte
	mem [ovmf.PageSize]byte
}

func (m *measurer) section(image []byte, s ovmf.TDVFSection, twoPass bool) {
	pages := s.MemoryDataSize / ovmf.PageSize
	if twoPass {
		for p := range pages {
			m.pageAdd(s, p)
		}
		for p := range pages {
			m.mrExtend(image, s, p)
		}
		return
	}
	for p := range pages {
		m.pageAdd(s, p)
		m.mrExtend(image, s, p)
	}
}

// pageAdd hashes what TDH.MEM.PAGE.ADD extends MRTD with: "MEM.PAGE.ADD",
// the page's GPA at offset 16, zeros to 128 bytes.
func (m *measurer) pageAdd(s ovmf.TDVFSection, page uint64) {
	if s.Attributes&ovmf.TDVFPageAug != 0 {
		return
	}
	m.block("MEM.PAGE.ADD", s.MemoryAddress+page*ovmf.PageSize)
}

// mrExtend hashes what TDH.MR.EXTEND extends MRTD with for each 256-byte
// chunk of the page: "MR.EXTEND", the chunk's GPA at offset 16, zeros to
// 128 bytes, then the chunk as the guest memory holds it (the section's
// raw data, zero past its end).
func (m *measurer) mrExtend(image []byte, s ovmf.TDVFSection, page uint64) {
	if s.Attributes&ovmf.TDVFMRExtend == 0 {
		return
	}
	clear(m.mem[:])
	if off := page * ovmf.PageSize; off < uint64(s.RawDataSize) {
		end := min(off+ovmf.PageSize, uint64(s.RawDataSize))
		copy(m.mem[:], image[uint64(s.DataOffset)+off:uint64(s.DataOffset)+end])
	}
	for c := 0; c < ovmf.PageSize; c += extendSize {
		m.block("MR.EXTEND", s.MemoryAddress+page*ovmf.PageSize+uint64(c))
		m.h.Write(m.mem[c : c+extendSize])
	}
}

func (m *measurer) block(op string, gpa uint64) {
	clear(m.blk[:])
	copy(m.blk[:], op)
	binary.LittleEndian.PutUint64(m.blk[16:], gpa)
	m.h.Write(m.blk[:])
}
