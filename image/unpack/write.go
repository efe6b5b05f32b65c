package unpack

import (
	"io"
	"os"
)

// writeBuffer is the size of the blocks file content is written in.
const writeBuffer = 1 << 20

// fileCopier copies tar entries into files in large blocks: the
// decompressor hands out at most a window (32 KiB) per read, and each
// write(2) has a fixed cost. A file of several blocks is written on a
// goroutine of its own, so that reading the next block (and all the
// decrypting and inflating upstream) overlaps the kernel's copy of the
// last one, the costliest step of unpacking.
type fileCopier struct {
	free chan []byte // two blocks, allocated on first use
}

func newFileCopier() *fileCopier {
	c := &fileCopier{free: make(chan []byte, 2)}
	c.free <- nil
	c.free <- nil
	return c
}

func (c *fileCopier) get() []byte {
	if b := <-c.free; b != nil {
		return b
	}
	return make([]byte, writeBuffer)
}

func (c *fileCopier) put(b []byte) { c.free <- b[:cap(b)] }

// copy writes r, a tar entry of size bytes, to f.
func (c *fileCopier) copy(f *os.File, r io.Reader, size int64) error {
	if size < writeBuffer {
		b := c.get()
		defer c.put(b)
		n, err := readBlock(r, b)
		if err != io.EOF {
			return err // a block larger than the entry ends with its io.EOF
		}
		_, err = f.Write(b[:n])
		return err
	}
	blocks, done := make(chan []byte, 1), make(chan error, 1)
	go func() {
		var err error
		for b := range blocks {
			if err == nil {
				_, err = f.Write(b)
			}
			c.put(b)
		}
		done <- err
	}()
	var rerr error
	for rerr == nil {
		b := c.get()
		n, err := readBlock(r, b)
		if n > 0 {
			blocks <- b[:n]
		} else {
			c.put(b)
		}
		rerr = err
	}
	close(blocks)
	werr := <-done
	if rerr != io.EOF {
		return rerr
	}
	return werr
}

// readBlock reads until b is full or r ends or fails; unlike io.ReadFull,
// an io.ErrUnexpectedEOF of r's own (a truncated archive) stays an error.
func readBlock(r io.Reader, b []byte) (int, error) {
	n := 0
	for n < len(b) {
		m, err := r.Read(b[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}
