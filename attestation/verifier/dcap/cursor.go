package dcap

import (
	"encoding/binary"
	"errors"
	"fmt"
)

var errTruncated = errors.New("truncated data")

// Cursor reads length-prefixed little-endian structures with bounds checks.
// After the first short read every read returns nothing and Err says why.
type Cursor struct {
	B   []byte
	Err error
}

// Take returns the next n bytes, nil past the end.
func (c *Cursor) Take(n int) []byte {
	if c.Err != nil {
		return nil
	}
	if n < 0 || n > len(c.B) {
		c.Err = errTruncated
		return nil
	}
	v := c.B[:n:n]
	c.B = c.B[n:]
	return v
}

// U16 reads a little-endian uint16.
func (c *Cursor) U16() uint16 {
	if v := c.Take(2); v != nil {
		return binary.LittleEndian.Uint16(v)
	}
	return 0
}

// U32 reads a little-endian uint32.
func (c *Cursor) U32() uint32 {
	if v := c.Take(4); v != nil {
		return binary.LittleEndian.Uint32(v)
	}
	return 0
}

// U64 reads a little-endian uint64.
func (c *Cursor) U64() uint64 {
	if v := c.Take(8); v != nil {
		return binary.LittleEndian.Uint64(v)
	}
	return 0
}

// ExactlyConsumed reports a read past the end or unread bytes.
func ExactlyConsumed(c *Cursor) error {
	if c.Err != nil {
		return c.Err
	}
	if len(c.B) != 0 {
		return fmt.Errorf("%d unexpected trailing bytes", len(c.B))
	}
	return nil
}
