package initdata

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
)

// The initdata disk carries a pod's initdata document into a VM as a small
// read-only block device (virtio-blk, serial DiskSerial): a 512-byte
// header — DiskMagic, version 1 (u32 little-endian), 4 zero bytes, the
// document's length (u64) — then the document, padded to 512 bytes. In TEE
// modes the document's digest is also bound into the launch (HOST_DATA,
// MRCONFIGID); the guest checks what it reads against that.
const (
	DiskSerial  = "cocoon-initdata"
	DiskMagic   = "COCOON-INITDATA\x00"
	diskVersion = 1
	sector      = 512
)

// EncodeDisk returns the disk image of doc.
func EncodeDisk(doc []byte) ([]byte, error) {
	if len(doc) > MaxSize {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrInvalid, len(doc), MaxSize)
	}
	size := sector + (len(doc)+sector-1)/sector*sector
	b := make([]byte, size)
	copy(b, DiskMagic)
	binary.LittleEndian.PutUint32(b[16:], diskVersion)
	binary.LittleEndian.PutUint64(b[24:], uint64(len(doc)))
	copy(b[sector:], doc)
	return b, nil
}

// DecodeDisk reads the document from an initdata disk.
func DecodeDisk(r io.Reader) ([]byte, error) {
	hdr := make([]byte, sector)
	if _, err := io.ReadFull(r, hdr); err != nil {
		return nil, fmt.Errorf("%w: disk header: %v", ErrInvalid, err)
	}
	if !bytes.Equal(hdr[:16], []byte(DiskMagic)) {
		return nil, fmt.Errorf("%w: not an initdata disk", ErrInvalid)
	}
	if v := binary.LittleEndian.Uint32(hdr[16:]); v != diskVersion {
		return nil, fmt.Errorf("%w: initdata disk version %d", ErrInvalid, v)
	}
	n := binary.LittleEndian.Uint64(hdr[24:])
	if n > MaxSize {
		return nil, fmt.Errorf("%w: initdata disk holds %d bytes, limit %d", ErrInvalid, n, MaxSize)
	}
	doc := make([]byte, n)
	if _, err := io.ReadFull(r, doc); err != nil {
		return nil, fmt.Errorf("%w: initdata disk: %v", ErrInvalid, err)
	}
	return doc, nil
}
