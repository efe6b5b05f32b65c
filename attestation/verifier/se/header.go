package se

import (
	"bytes"
	"encoding/binary"
	"fmt"
)

// The SE image header (boot request control block) starts with a fixed
// head; the parts a measurement covers are its three digests (PLD, ALD,
// TLD: pages, addresses, tweaks) and its 16-byte tag, the header's last
// bytes. These 208 bytes are what Trustee calls the image header tags.
const (
	hdrHeadSize = 0x1a0
	digestSize  = 64
	tagSize     = 16
	// TagsSize is the size of the image header tags.
	TagsSize = 3*digestSize + tagSize
	hdrV1    = 0x100
)

var hdrMagic = []byte("IBMSecEx")

// Tags are an SE image's header tags: PLD, ALD, TLD and the tag.
type Tags [TagsSize]byte

// Tag is the header's 16-byte tag.
func (t *Tags) Tag() []byte { return t[3*digestSize:] }

// ParseHeader reads the tags of an SE header as pvextract-hdr writes it
// (hdr.bin).
func ParseHeader(hdr []byte) (Tags, error) {
	var t Tags
	if len(hdr) < hdrHeadSize || !bytes.HasPrefix(hdr, hdrMagic) {
		return t, fmt.Errorf("%w: no SE header magic", ErrHeader)
	}
	if v := binary.BigEndian.Uint32(hdr[8:]); v != hdrV1 {
		return t, fmt.Errorf("%w: version %#x", ErrHeader, v)
	}
	size := binary.BigEndian.Uint32(hdr[12:])
	if size < hdrHeadSize+tagSize || uint64(size) > uint64(len(hdr)) {
		return t, fmt.Errorf("%w: size %d of %d bytes", ErrHeader, size, len(hdr))
	}
	copy(t[:], hdr[0xe0:hdrHeadSize])
	copy(t[3*digestSize:], hdr[size-tagSize:size])
	return t, nil
}
