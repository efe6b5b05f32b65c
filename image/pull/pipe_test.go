package pull

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"testing"
	"testing/iotest"
)

func TestPipeCarriesStream(t *testing.T) {
	data := make([]byte, 3*pipeChunk*pipeBuffers+123)
	rand.Read(data)
	p := newPipe()
	go p.pump(iotest.HalfReader(bytes.NewReader(data)), nil)
	got, err := io.ReadAll(iotest.OneByteReader(io.LimitReader(p, 1000)))
	if err != nil {
		t.Fatal(err)
	}
	rest, err := io.ReadAll(p)
	if err != nil || !bytes.Equal(append(got, rest...), data) {
		t.Fatalf("stream differs (%d+%d bytes): %v", len(got), len(rest), err)
	}
}

func TestPipeErrors(t *testing.T) {
	boom := errors.New("boom")
	t.Run("writer error reaches the reader after the data", func(t *testing.T) {
		p := newPipe()
		go p.pump(io.MultiReader(bytes.NewReader([]byte("abc")), iotest.ErrReader(boom)), nil)
		got, err := io.ReadAll(p)
		if string(got) != "abc" || !errors.Is(err, boom) {
			t.Fatalf("%q %v", got, err)
		}
	})
	t.Run("a truncated stream stays an error", func(t *testing.T) {
		p := newPipe()
		go p.pump(io.MultiReader(bytes.NewReader([]byte("abc")), iotest.ErrReader(io.ErrUnexpectedEOF)), nil)
		if _, err := io.ReadAll(p); !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("then judges the end", func(t *testing.T) {
		p := newPipe()
		go p.pump(bytes.NewReader([]byte("abc")), func(err error) error { return errors.Join(err, boom) })
		if _, err := io.ReadAll(p); !errors.Is(err, boom) {
			t.Fatalf("err = %v", err)
		}
	})
	// An endless source: the writer must stop when the reader does.
	endless := func() io.Reader { return rand.Reader }
	t.Run("closing stops the writer", func(t *testing.T) {
		p := newPipe()
		done := make(chan struct{})
		go func() { p.pump(endless(), nil); close(done) }()
		io.ReadFull(p, make([]byte, 10))
		p.Close()
		p.Close()
		<-done
		if !errors.Is(p.err, errPipeClosed) {
			t.Fatalf("err = %v", p.err)
		}
	})
	t.Run("a verifying writer reads to the end for its verdict", func(t *testing.T) {
		p := newPipe()
		p.drain = true
		src := io.MultiReader(bytes.NewReader(make([]byte, 10*pipeChunk*pipeBuffers)), iotest.ErrReader(boom))
		done := make(chan struct{})
		go func() { p.pump(src, nil); close(done) }()
		p.Close()
		<-done
		if !errors.Is(p.err, boom) {
			t.Fatalf("err = %v", p.err)
		}
	})
}
