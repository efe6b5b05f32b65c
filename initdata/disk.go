package initdata

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"fmt"
	"io"
)

// The initdata disk carries a pod's initdata document into a VM as a small
// read-only block device (virtio-blk, serial DiskSerial), in Kata's format:
// the magic "initdata", the length of what follows (u64 little-endian),
// then the document gzip-compressed, padded here to 512 bytes. Kata's agent
// finds it by its serial or its magic, so a Cocoon host can boot Kata's
// guest. Cocoon's first hosts wrote another layout (LegacyDiskMagic),
// which the guest still reads. In TEE modes the document's digest is also
// bound into the launch (HOST_DATA, MRCONFIGID); the guest checks what it
// reads against that.
const (
	DiskSerial       = "initdata"
	LegacyDiskSerial = "cocoon-initdata"
	DiskMagic        = "initdata"
	LegacyDiskMagic  = "COCOON-INITDATA\x00"
	legacyVersion    = 1
	sector           = 512
	// maxCompressed bounds the compressed document: gzip adds a few bytes
	// to what it cannot compress.
	maxCompressed = MaxSize + 1<<10
)

// EncodeDisk returns the disk image of doc.
func EncodeDisk(doc []byte) ([]byte, error) {
	if len(doc) > MaxSize {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrInvalid, len(doc), MaxSize)
	}
	var b bytes.Buffer
	b.WriteString(DiskMagic)
	b.Write(make([]byte, 8))
	gz, _ := gzip.NewWriterLevel(&b, gzip.BestCompression)
	gz.Write(doc)
	if err := gz.Close(); err != nil {
		return nil, err
	}
	img := b.Bytes()
	binary.LittleEndian.PutUint64(img[8:], uint64(len(img)-16))
	if pad := len(img) % sector; pad != 0 {
		img = append(img, make([]byte, sector-pad)...)
	}
	return img, nil
}

// DecodeDisk reads the document from an initdata disk, Kata's or Cocoon's
// first layout.
func DecodeDisk(r io.Reader) ([]byte, error) {
	hdr := make([]byte, 16)
	if _, err := io.ReadFull(r, hdr); err != nil {
		return nil, fmt.Errorf("%w: disk header: %v", ErrInvalid, err)
	}
	switch {
	case bytes.Equal(hdr[:8], []byte(DiskMagic)):
		return decodeKata(r, binary.LittleEndian.Uint64(hdr[8:]))
	case bytes.Equal(hdr, []byte(LegacyDiskMagic)):
		return decodeLegacy(r)
	}
	return nil, fmt.Errorf("%w: not an initdata disk", ErrInvalid)
}

// decodeKata reads n bytes of one gzip member and their document.
func decodeKata(r io.Reader, n uint64) ([]byte, error) {
	if n > maxCompressed {
		return nil, fmt.Errorf("%w: initdata disk holds %d compressed bytes, limit %d", ErrInvalid, n, maxCompressed)
	}
	gz, err := gzip.NewReader(io.LimitReader(r, int64(n)))
	if err != nil {
		return nil, fmt.Errorf("%w: initdata disk: %v", ErrInvalid, err)
	}
	gz.Multistream(false)
	doc, err := io.ReadAll(io.LimitReader(gz, MaxSize+1))
	if err != nil {
		return nil, fmt.Errorf("%w: initdata disk: %v", ErrInvalid, err)
	}
	if len(doc) > MaxSize {
		return nil, fmt.Errorf("%w: initdata disk holds over %d bytes", ErrInvalid, MaxSize)
	}
	return doc, nil
}

// decodeLegacy reads the rest of Cocoon's first layout: a 512-byte header
// (magic, version 1 as u32, 4 zero bytes, the document's length as u64),
// then the document.
func decodeLegacy(r io.Reader) ([]byte, error) {
	hdr := make([]byte, sector-16)
	if _, err := io.ReadFull(r, hdr); err != nil {
		return nil, fmt.Errorf("%w: disk header: %v", ErrInvalid, err)
	}
	if v := binary.LittleEndian.Uint32(hdr); v != legacyVersion {
		return nil, fmt.Errorf("%w: initdata disk version %d", ErrInvalid, v)
	}
	n := binary.LittleEndian.Uint64(hdr[8:])
	if n > MaxSize {
		return nil, fmt.Errorf("%w: initdata disk holds %d bytes, limit %d", ErrInvalid, n, MaxSize)
	}
	doc := make([]byte, n)
	if _, err := io.ReadFull(r, doc); err != nil {
		return nil, fmt.Errorf("%w: initdata disk: %v", ErrInvalid, err)
	}
	return doc, nil
}
