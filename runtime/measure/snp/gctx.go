package snp

import (
	"crypto/sha512"
	"encoding/binary"
	"fmt"

	"github.com/cocoon-cc/cocoon/runtime/measure/ovmf"
)

// DigestSize is the size of an SNP launch digest (SHA-384).
const DigestSize = sha512.Size384

// PageType is the PAGE_TYPE of SNP_LAUNCH_UPDATE (SNP ABI, PAGE_INFO).
type PageType uint8

// Page types.
const (
	PageNormal     PageType = 1
	PageVMSA       PageType = 2
	PageZero       PageType = 3
	PageUnmeasured PageType = 4
	PageSecrets    PageType = 5
	PageCPUID      PageType = 6
)

// PageInfoSize is the size of the PAGE_INFO structure.
const PageInfoSize = 0x70

// vmsaGPA is the GPA measured for a VMSA page: KVM passes (u64)-1, which
// the firmware measures page-aligned and cut to 48 bits.
const vmsaGPA = 0xFFFFFFFFF000

// PageInfo is the structure the firmware hashes for every page a
// LAUNCH_UPDATE adds: the new launch digest is SHA-384 of its encoding.
// The guest never gets IMI pages or VMPL1-3 permissions here, so those
// fields stay zero.
type PageInfo struct {
	DigestCur [DigestSize]byte // the launch digest so far
	Contents  [DigestSize]byte // SHA-384 of the page, zero for pages without contents
	Type      PageType
	GPA       uint64
}

// MarshalBinary encodes p as the SNP ABI lays PAGE_INFO out: DIGEST_CUR at
// 0x00, CONTENTS at 0x30, LENGTH (u16) at 0x60, PAGE_TYPE at 0x62,
// IMI_PAGE at 0x63, VMPL3/2/1_PERMS at 0x64-0x66, reserved 0x67, GPA (u64)
// at 0x68.
func (p *PageInfo) MarshalBinary() ([]byte, error) {
	b := make([]byte, PageInfoSize)
	copy(b[0x00:], p.DigestCur[:])
	copy(b[0x30:], p.Contents[:])
	binary.LittleEndian.PutUint16(b[0x60:], PageInfoSize)
	b[0x62] = byte(p.Type)
	binary.LittleEndian.PutUint64(b[0x68:], p.GPA)
	return b, nil
}

// Chain replays the launch digest the SNP firmware computes as the VMM
// adds pages to the guest.
type Chain struct {
	ld [DigestSize]byte
}

// NewChain starts a digest from seed: all zeroes at launch start, or a
// digest computed earlier (for instance over the firmware alone).
func NewChain(seed [DigestSize]byte) *Chain { return &Chain{ld: seed} }

// Digest is the launch digest so far.
func (c *Chain) Digest() [DigestSize]byte { return c.ld }

func (c *Chain) update(t PageType, gpa uint64, contents [DigestSize]byte) {
	p := PageInfo{DigestCur: c.ld, Contents: contents, Type: t, GPA: gpa}
	b, _ := p.MarshalBinary()
	c.ld = sha512.Sum384(b)
}

// Normal adds data as normal pages from gpa on; data is whole pages.
func (c *Chain) Normal(gpa uint64, data []byte) error {
	if len(data)%ovmf.PageSize != 0 {
		return fmt.Errorf("snp: normal pages of %d bytes are not whole pages", len(data))
	}
	for off := 0; off < len(data); off += ovmf.PageSize {
		c.update(PageNormal, gpa+uint64(off), sha512.Sum384(data[off:off+ovmf.PageSize]))
	}
	return nil
}

// Zero adds size bytes of zero pages from gpa on: measured, without contents.
func (c *Chain) Zero(gpa uint64, size uint32) {
	for off := uint64(0); off < uint64(size); off += ovmf.PageSize {
		c.update(PageZero, gpa+off, [DigestSize]byte{})
	}
}

// Secrets adds the secrets page the firmware fills.
func (c *Chain) Secrets(gpa uint64) { c.update(PageSecrets, gpa, [DigestSize]byte{}) }

// CPUID adds the CPUID page the firmware checks.
func (c *Chain) CPUID(gpa uint64) { c.update(PageCPUID, gpa, [DigestSize]byte{}) }

// VMSA adds one vCPU's initial register state.
func (c *Chain) VMSA(page *[VMSASize]byte) { c.update(PageVMSA, vmsaGPA, sha512.Sum384(page[:])) }
