package tdx

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
)

const (
	evNoAction = 0x3
	algSHA384  = 0xc
)

// digestSizes of the TCG algorithms a CCEL may use.
var digestSizes = map[uint16]int{0x4: 20, 0xb: 32, algSHA384: 48, 0xd: 64, 0x12: 32}

// ErrCCEL reports a CC event log that cannot be walked.
var ErrCCEL = errors.New("tdx: malformed CCEL")

// TrimCCEL cuts the ACPI CCEL area after its last event: the firmware
// pads the area with zeros or ones, and AAEL records must follow the
// events directly.
func TrimCCEL(b []byte) ([]byte, error) {
	c := cursor{b: b}
	// The Spec ID event, in the SHA-1 event format.
	c.skip(8 + 20)
	c.skip(c.u32())
	for c.err == nil {
		if len(b)-c.off < 8 {
			return nil, fmt.Errorf("%w: no end of log", ErrCCEL)
		}
		if head := binary.LittleEndian.Uint64(b[c.off:]); head == 0 || head == math.MaxUint64 {
			return b[:c.off], nil
		}
		c.skip(8) // MR index, event type
		for n := c.u32(); n > 0 && c.err == nil; n-- {
			size, ok := digestSizes[c.u16()]
			if !ok && c.err == nil {
				return nil, fmt.Errorf("%w: unknown digest algorithm at %d", ErrCCEL, c.off)
			}
			c.skip(size)
		}
		c.skip(c.u32())
	}
	return nil, fmt.Errorf("%w: %w", ErrCCEL, c.err)
}

// cursor reads little-endian fields, remembering the first overrun.
type cursor struct {
	b   []byte
	off int
	err error
}

func (c *cursor) skip(n int) {
	if c.err == nil && (n < 0 || n > len(c.b)-c.off) {
		c.err = fmt.Errorf("truncated at %d", c.off)
	}
	if c.err == nil {
		c.off += n
	}
}

func (c *cursor) u32() int {
	if c.err != nil || len(c.b)-c.off < 4 {
		c.skip(4)
		return 0
	}
	v := binary.LittleEndian.Uint32(c.b[c.off:])
	c.off += 4
	if v > math.MaxInt32 {
		c.err = fmt.Errorf("size %d at %d", v, c.off)
		return 0
	}
	return int(v)
}

func (c *cursor) u16() uint16 {
	if c.err != nil || len(c.b)-c.off < 2 {
		c.skip(2)
		return 0
	}
	v := binary.LittleEndian.Uint16(c.b[c.off:])
	c.off += 2
	return v
}
