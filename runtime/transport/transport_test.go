package transport

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// port emulates a virtio-serial port and QEMU's chardev socket for it: the
// guest opens a path (a symlink to a raw pty), the host connects to a unix
// socket, and QEMU copies bytes between the two. As with virtio-serial, a
// host disconnect is an end-of-file for the guest (the pty is replaced by
// a new one) and bytes queued earlier stay queued.
type port struct {
	t      *testing.T
	dir    string
	link   string // the guest's device path
	socket string // QEMU's chardev socket
	mu     sync.Mutex
	master *os.File
}

func newPort(t *testing.T) *port {
	dir := t.TempDir()
	p := &port{t: t, dir: dir, link: filepath.Join(dir, "agent.0"), socket: filepath.Join(dir, "agent.sock")}
	p.replace()
	l, err := net.Listen("unix", p.socket)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		l.Close()
		p.mu.Lock()
		p.master.Close()
		p.mu.Unlock()
	})
	go p.serve(l)
	return p
}

// replace gives the guest a new pty, as a reconnect gives it a new session.
func (p *port) replace() {
	master, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		p.t.Fatal(err)
	}
	// Through SyscallConn, not Fd: Fd would make the master blocking, and
	// Close could not end a read of it (a host disconnect would then
	// reach the guest only once the guest wrote something).
	raw, err := master.SyscallConn()
	if err != nil {
		p.t.Fatal(err)
	}
	var n int
	if err := raw.Control(func(fd uintptr) {
		if err = unix.IoctlSetPointerInt(int(fd), unix.TIOCSPTLCK, 0); err == nil {
			n, err = unix.IoctlGetInt(int(fd), unix.TIOCGPTN)
		}
	}); err != nil {
		p.t.Fatal(err)
	}
	if err != nil {
		p.t.Fatal(err)
	}
	slave := fmt.Sprintf("/dev/pts/%d", n)
	rawMode(p.t, slave)
	os.Remove(p.link)
	if err := os.Symlink(slave, p.link); err != nil {
		p.t.Fatal(err)
	}
	p.mu.Lock()
	old := p.master
	p.master = master
	p.mu.Unlock()
	if old != nil {
		old.Close()
	}
}

func rawMode(t *testing.T, path string) {
	f, err := os.OpenFile(path, os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tio, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	if err != nil {
		t.Fatal(err)
	}
	tio.Iflag &^= unix.IGNBRK | unix.BRKINT | unix.PARMRK | unix.ISTRIP | unix.INLCR | unix.IGNCR | unix.ICRNL | unix.IXON
	tio.Oflag &^= unix.OPOST
	tio.Lflag &^= unix.ECHO | unix.ECHONL | unix.ICANON | unix.ISIG | unix.IEXTEN
	tio.Cflag = tio.Cflag&^(unix.CSIZE|unix.PARENB) | unix.CS8
	tio.Cc[unix.VMIN], tio.Cc[unix.VTIME] = 1, 0
	if err := unix.IoctlSetTermios(int(f.Fd()), unix.TCSETS, tio); err != nil {
		t.Fatal(err)
	}
}

func (p *port) serve(l net.Listener) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		m := p.master
		p.mu.Unlock()
		go io.Copy(m, c)
		p.toHost(c, m)
		c.Close()
	}
}

// toHost copies the guest's bytes to the host until the pty is replaced.
// A pty master reads EIO while no slave is open, where QEMU just waits for
// the guest to open the port.
func (p *port) toHost(c net.Conn, m *os.File) {
	buf := make([]byte, 32<<10)
	for {
		n, err := m.Read(buf)
		if n > 0 {
			if _, err := c.Write(buf[:n]); err != nil {
				return
			}
		}
		if errors.Is(err, unix.EIO) {
			p.mu.Lock()
			current := p.master == m
			p.mu.Unlock()
			if current {
				time.Sleep(10 * time.Millisecond)
				continue
			}
		}
		if err != nil {
			return
		}
	}
}

// disconnect ends the host's connection as the guest sees it.
func (p *port) disconnect() { p.replace() }

// inject queues bytes for the guest, as a dead connection may leave.
func (p *port) inject(b []byte) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, err := p.master.Write(b); err != nil {
		p.t.Fatal(err)
	}
}

// echo serves every accepted connection by echoing it.
func echo(l net.Listener) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		go func() {
			io.Copy(c, c)
			c.Close()
		}()
	}
}

// roundTrip sends n random bytes over a new connection and checks the echo.
func roundTrip(t *testing.T, d Dialer, n int) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := d.Dial(ctx)
	if err != nil {
		t.Error(err)
		return
	}
	defer c.Close()
	want := make([]byte, n)
	rand.Read(want)
	go c.Write(want)
	got := make([]byte, n)
	if _, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, want) {
		t.Errorf("echo of %d bytes: %v", n, err)
	}
}

func TestSerialStreams(t *testing.T) {
	p := newPort(t)
	// Stale bytes of an earlier connection wait in the port.
	p.inject([]byte("\x00\x01stale yamux frame\x00\x02"))
	l, err := Listen(context.Background(), "serial://"+p.link)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go echo(l)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	d, err := NewDialer(ctx, "serial://"+p.socket)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			roundTrip(t, d, 64<<10+i)
		}()
	}
	wg.Wait()
}

// TestSerialReconnect: after the host goes away, the guest serves the next
// host's connections (a shim restarted), and the first host's session ends.
func TestSerialReconnect(t *testing.T) {
	p := newPort(t)
	l, err := Listen(context.Background(), "serial://"+p.link)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go echo(l)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	d1, err := NewDialer(ctx, "serial://"+p.socket)
	if err != nil {
		t.Fatal(err)
	}
	roundTrip(t, d1, 1000)
	d1.Close()
	p.disconnect()
	d2, err := NewDialer(ctx, "serial://"+p.socket)
	if err != nil {
		t.Fatal(err)
	}
	defer d2.Close()
	roundTrip(t, d2, 1000)
	if _, err := d1.Dial(ctx); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("dial on a closed session: %v", err)
	}
}

// TestHandshakeTimeout: a guest that never answers fails the dial once the
// context ends, with ErrHandshake.
func TestHandshakeTimeout(t *testing.T) {
	p := newPort(t)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if _, err := NewDialer(ctx, "serial://"+p.socket); !errors.Is(err, ErrHandshake) {
		t.Fatalf("error %v, want ErrHandshake", err)
	}
	ctx2, cancel2 := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel2()
	if _, err := NewDialer(ctx2, "serial://"+filepath.Join(t.TempDir(), "none.sock")); !errors.Is(err, ErrHandshake) {
		t.Fatalf("no socket: %v, want ErrHandshake", err)
	}
}

func TestUnix(t *testing.T) {
	path := filepath.Join(t.TempDir(), "agent.sock")
	l, err := Listen(context.Background(), "unix://"+path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go echo(l)
	d, err := NewDialer(context.Background(), "unix://"+path)
	if err != nil {
		t.Fatal(err)
	}
	roundTrip(t, d, 4096)
	if st, err := os.Stat(path); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode %v %v", st.Mode(), err)
	}
}

func TestBadURIs(t *testing.T) {
	for _, uri := range []string{"", "tcp://1.2.3.4:5", "unix://", "vsock://x:1", "vsock://3", "vsock://-2:1024",
		"fd://1", "fd://x", "serial://../../etc", "serial://no-such-port"} {
		if _, err := Listen(context.Background(), uri); !errors.Is(err, ErrUnsupportedURI) {
			t.Errorf("Listen(%q): %v", uri, err)
		}
	}
	for _, uri := range []string{"tcp://x", "vsock://2:1024", "vsock://-1:1024"} {
		if _, err := NewDialer(context.Background(), uri); !errors.Is(err, ErrUnsupportedURI) {
			t.Errorf("NewDialer(%q): %v", uri, err)
		}
	}
}

// FuzzScan: any byte stream yields the nonce after the magic, or an error,
// never reading more than the limit allows.
func FuzzScan(f *testing.F) {
	f.Add(append([]byte("junkCOCOON-HELLO\x01"), bytes.Repeat([]byte{7}, nonceSize)...))
	f.Add([]byte("COCOON-HELLO"))
	f.Fuzz(func(t *testing.T, b []byte) {
		r := bytes.NewReader(b)
		nonce, err := scan(r, helloMagic, 64)
		if err != nil {
			return
		}
		consumed := len(b) - r.Len()
		if len(nonce) != nonceSize || consumed > 64+len(helloMagic)+nonceSize+1 ||
			!bytes.Equal(b[consumed-nonceSize-len(helloMagic):consumed-nonceSize], helloMagic) {
			t.Fatalf("nonce %x after %d bytes", nonce, consumed)
		}
	})
}
