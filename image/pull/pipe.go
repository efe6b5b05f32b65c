package pull

import (
	"errors"
	"io"
	"sync"
)

// Stages of a layer's pipeline run in goroutines of their own, joined by
// pipes, so that a pull uses more than one core: reading, hashing and
// decrypting the blob; inflating and hashing the tar; untarring into the
// rootfs. Unlike io.Pipe, a stage hands over a filled buffer and carries
// on while the next one consumes it; memory stays at pipeBuffers buffers
// of pipeChunk bytes per pipe.
const (
	pipeChunk   = 256 << 10
	pipeBuffers = 4
)

// pipe carries a stream between two stages.
type pipe struct {
	full  chan []byte // filled buffers, closed after the last
	free  chan []byte
	err   error         // why full was closed (nil: the stream ended)
	done  chan struct{} // closed when the reader stops
	drain bool          // once the reader stops, read the input to its end
	stop  sync.Once
	cur   []byte // what Read has not handed out yet of the current buffer
	last  []byte // the current buffer, to give back
}

func newPipe() *pipe {
	p := &pipe{full: make(chan []byte, pipeBuffers), free: make(chan []byte, pipeBuffers), done: make(chan struct{})}
	for range pipeBuffers {
		p.free <- nil // allocated on first use
	}
	return p
}

// pump copies r into the pipe until r ends or fails, or the reader stops,
// and closes the pipe with what then makes of the outcome (nil: r ended).
func (p *pipe) pump(r io.Reader, then func(error) error) {
	err := p.fill(r)
	if then != nil {
		err = then(err)
	}
	p.closeWith(err)
}

// closeWith ends the stream: the reader sees err, or io.EOF if it is nil.
func (p *pipe) closeWith(err error) {
	p.err = err
	close(p.full)
}

func (p *pipe) fill(r io.Reader) error {
	for {
		var buf []byte
		select {
		case buf = <-p.free:
		case <-p.done:
			if p.drain {
				return discard(r)
			}
			return errPipeClosed
		}
		if buf == nil {
			buf = make([]byte, pipeChunk)
		}
		n, err := readBlock(r, buf)
		if n > 0 {
			p.full <- buf[:n] // never blocks: there are as many slots as buffers
		} else {
			p.free <- buf
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// discard reads r to its end, for the checks that run there.
func discard(r io.Reader) error {
	buf := make([]byte, pipeChunk)
	for {
		if _, err := readBlock(r, buf); err != nil {
			if err == io.EOF {
				return errPipeClosed
			}
			return err
		}
	}
}

// readBlock reads until buf is full or r ends or fails; unlike
// io.ReadFull, an io.ErrUnexpectedEOF of r's own (a truncated stream)
// stays an error.
func readBlock(r io.Reader, buf []byte) (int, error) {
	n := 0
	for n < len(buf) {
		m, err := r.Read(buf[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// errPipeClosed ends a stage whose reader has stopped; the reader's error
// is the one reported.
var errPipeClosed = errors.New("pipe reader closed")

// Read reads the stream; at its end it returns io.EOF or the writing
// stage's error.
func (p *pipe) Read(b []byte) (int, error) {
	for len(p.cur) == 0 {
		if p.last != nil {
			p.free <- p.last[:cap(p.last)]
			p.last = nil
		}
		buf, ok := <-p.full
		if !ok {
			if p.err != nil {
				return 0, p.err
			}
			return 0, io.EOF
		}
		p.cur, p.last = buf, buf
	}
	n := copy(b, p.cur)
	p.cur = p.cur[n:]
	return n, nil
}

// Close stops the writing stage early. It is safe to call more than once.
func (p *pipe) Close() error {
	p.stop.Do(func() { close(p.done) })
	return nil
}
