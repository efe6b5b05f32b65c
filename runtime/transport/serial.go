package transport

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"

	"github.com/hashicorp/yamux"
)

// Handshake magics and sizes (see the package documentation).
var (
	helloMagic = []byte("COCOON-HELLO\x01")
	readyMagic = []byte("COCOON-READY\x01")
)

const nonceSize = 16

// MaxGarbage bounds the bytes either side discards while resynchronising.
const MaxGarbage = 1 << 20

// yamuxConfig has no timer that ends a session. A session ends when its
// pipe does: the host sees QEMU's socket close when the VM exits, the guest
// reads end-of-file when the host goes away. A VM the host does not run for
// a while (an overloaded host, a pause) is only slow: yamux's keepalive,
// stream-open and write timeouts would end the session for good (nothing
// redials it, so the pod would be lost) or cut a ttrpc message in two.
func yamuxConfig() *yamux.Config {
	c := yamux.DefaultConfig()
	c.EnableKeepAlive = false
	c.StreamOpenTimeout = 0
	c.ConnectionWriteTimeout = 24 * time.Hour
	c.LogOutput = io.Discard
	return c
}

// scan reads r a byte at a time (so that nothing after the match is
// consumed) until magic followed by nonceSize bytes; it returns the nonce.
func scan(r io.Reader, magic []byte, limit int) ([]byte, error) {
	var window []byte
	b := make([]byte, 1)
	for read := 0; ; read++ {
		if read > limit+len(magic)+nonceSize {
			return nil, fmt.Errorf("%w: no %q in %d bytes", ErrHandshake, magic[:len(magic)-1], limit)
		}
		if _, err := io.ReadFull(r, b); err != nil {
			return nil, err
		}
		window = append(window, b[0])
		if len(window) > len(magic)+nonceSize {
			window = window[1:]
		}
		if len(window) == len(magic)+nonceSize && bytes.Equal(window[:len(magic)], magic) {
			return window[len(magic):], nil
		}
	}
}

// serialListener is the guest side: sessions, one after another, each
// serving the host's connections as yamux streams.
type serialListener struct {
	path   string
	conns  chan net.Conn
	ctx    context.Context
	cancel context.CancelFunc
	mu     sync.Mutex
	port   io.Closer
	done   chan struct{}
}

func listenSerial(ctx context.Context, path string) *serialListener {
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	l := &serialListener{path: path, conns: make(chan net.Conn), ctx: ctx, cancel: cancel, done: make(chan struct{})}
	go l.loop()
	return l
}

func (l *serialListener) loop() {
	defer close(l.done)
	for l.ctx.Err() == nil {
		if err := l.session(); err != nil && l.ctx.Err() == nil {
			// No host (the port reads end-of-file) or a broken session:
			// wait a little, then reopen the port.
			time.Sleep(50 * time.Millisecond)
		}
	}
}

// session opens the port, answers one hello and serves its streams until
// the host goes away.
func (l *serialListener) session() error {
	f, err := os.OpenFile(l.path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	l.mu.Lock()
	l.port = f
	l.mu.Unlock()
	defer f.Close()
	nonce, err := scan(f, helloMagic, MaxGarbage)
	if err != nil {
		return err
	}
	if _, err := f.Write(append(append([]byte{}, readyMagic...), nonce...)); err != nil {
		return err
	}
	sess, err := yamux.Server(f, yamuxConfig())
	if err != nil {
		return err
	}
	defer sess.Close()
	for {
		c, err := sess.Accept()
		if err != nil {
			return err
		}
		select {
		case l.conns <- c:
		case <-l.ctx.Done():
			c.Close()
			return l.ctx.Err()
		}
	}
}

func (l *serialListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.ctx.Done():
		return nil, net.ErrClosed
	}
}

func (l *serialListener) Close() error {
	l.cancel()
	l.mu.Lock()
	if l.port != nil {
		l.port.Close()
	}
	l.mu.Unlock()
	return nil
}

func (l *serialListener) Addr() net.Addr { return serialAddr(l.path) }

type serialAddr string

func (a serialAddr) Network() string { return "serial" }
func (a serialAddr) String() string  { return string(a) }

// serialDialer is the host side: one yamux session over QEMU's socket.
type serialDialer struct {
	sess *yamux.Session
}

// dialSerial connects to QEMU's chardev socket (retrying until it exists),
// sends a hello and waits for the guest's answer, all until ctx ends.
func dialSerial(ctx context.Context, path string) (Dialer, error) {
	var conn net.Conn
	for {
		var d net.Dialer
		c, err := d.DialContext(ctx, "unix", path)
		if err == nil {
			conn = c
			break
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("%w: connect %s: %v", ErrHandshake, path, err)
		case <-time.After(retryDelay):
		}
	}
	if err := handshake(ctx, conn); err != nil {
		conn.Close()
		return nil, err
	}
	sess, err := yamux.Client(conn, yamuxConfig())
	if err != nil {
		conn.Close()
		return nil, err
	}
	return &serialDialer{sess: sess}, nil
}

func handshake(ctx context.Context, conn net.Conn) error {
	nonce := make([]byte, nonceSize)
	rand.Read(nonce)
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if _, err := conn.Write(append(append([]byte{}, helloMagic...), nonce...)); err != nil {
		return fmt.Errorf("%w: %v", ErrHandshake, err)
	}
	for {
		got, err := scan(conn, readyMagic, MaxGarbage)
		if err != nil {
			if ctx.Err() != nil {
				err = ctx.Err()
			}
			return fmt.Errorf("%w: no answer from the guest: %w", ErrHandshake, err)
		}
		// An answer to an earlier connection's hello is garbage too.
		if bytes.Equal(got, nonce) {
			return conn.SetDeadline(time.Time{})
		}
	}
}

func (d *serialDialer) Dial(ctx context.Context) (net.Conn, error) {
	c, err := d.sess.OpenStream()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", net.ErrClosed, err)
	}
	return c, nil
}

func (d *serialDialer) Close() error { return d.sess.Close() }

// Done is closed when the session ends (the guest or QEMU went away).
func (d *serialDialer) Done() <-chan struct{} { return d.sess.CloseChan() }
