// Package transport is the channel between the host (the shim) and the
// guest agent: each ttrpc client connection of the host becomes one
// connection the agent accepts.
//
// Endpoints are URIs:
//
//	unix:///path              both sides: a unix socket (local backend, tests)
//	fd://3                    guest: an inherited listening socket
//	vsock://-1:1024           guest: AF_VSOCK on any CID
//	vsock://3:1024            host: the guest with CID 3
//	serial:///dev/virtio-ports/agent.0, serial://agent.0
//	                          guest: a virtio-serial port, by path or name
//	serial:///run/x/agent.sock
//	                          host: QEMU's chardev socket of that port
//
// A virtio-serial port is one byte pipe without connections: bytes from an
// earlier host connection may still be in it, and the guest sees a host
// disconnect only as end-of-file. Both sides therefore resynchronise before
// they multiplex connections over the pipe with yamux (the guest is the
// yamux server): the host writes
//
//	"COCOON-HELLO\x01" + 16-byte random nonce
//
// the guest discards everything before that magic and answers
//
//	"COCOON-READY\x01" + the same nonce
//
// and the host discards everything before that answer. Each side gives up
// after MaxGarbage discarded bytes. After a host disconnect the guest
// reopens the port and waits for the next hello.
package transport

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/mdlayher/vsock"
)

// Errors of this package.
var (
	ErrUnsupportedURI = errors.New("transport: unsupported URI")
	ErrHandshake      = errors.New("transport: handshake failed")
)

// Dialer opens connections to the guest agent.
type Dialer interface {
	Dial(ctx context.Context) (net.Conn, error)
	Close() error
}

// Listen serves the guest side of uri.
func Listen(ctx context.Context, uri string) (net.Listener, error) {
	scheme, rest, err := split(uri)
	if err != nil {
		return nil, err
	}
	switch scheme {
	case "unix":
		return listenUnix(rest)
	case "fd":
		n, err := strconv.Atoi(rest)
		if err != nil || n < 3 {
			return nil, fmt.Errorf("%w: %q: want fd://N with N >= 3", ErrUnsupportedURI, uri)
		}
		f := os.NewFile(uintptr(n), "listener")
		defer f.Close()
		return net.FileListener(f)
	case "vsock":
		cid, port, err := vsockAddr(rest)
		if err != nil {
			return nil, err
		}
		if cid < 0 {
			return vsock.Listen(port, nil)
		}
		return vsock.ListenContextID(uint32(cid), port, nil)
	case "serial":
		path, err := portPath(rest)
		if err != nil {
			return nil, err
		}
		return listenSerial(ctx, path), nil
	}
	return nil, fmt.Errorf("%w: %q", ErrUnsupportedURI, uri)
}

// NewDialer connects the host side of uri. For serial it waits (until ctx
// ends) for QEMU's socket and the guest's answer to the handshake.
func NewDialer(ctx context.Context, uri string) (Dialer, error) {
	scheme, rest, err := split(uri)
	if err != nil {
		return nil, err
	}
	switch scheme {
	case "unix":
		return unixDialer(rest), nil
	case "vsock":
		cid, port, err := vsockAddr(rest)
		if err != nil {
			return nil, err
		}
		if cid < 3 {
			return nil, fmt.Errorf("%w: %q: the host dials a guest CID >= 3", ErrUnsupportedURI, uri)
		}
		return vsockDialer{cid: uint32(cid), port: port}, nil
	case "serial":
		return dialSerial(ctx, rest)
	}
	return nil, fmt.Errorf("%w: %q", ErrUnsupportedURI, uri)
}

func split(uri string) (scheme, rest string, err error) {
	scheme, rest, ok := strings.Cut(uri, "://")
	if !ok || rest == "" {
		return "", "", fmt.Errorf("%w: %q", ErrUnsupportedURI, uri)
	}
	return scheme, rest, nil
}

func vsockAddr(rest string) (cid int64, port uint32, err error) {
	host, p, err := net.SplitHostPort(rest)
	if err == nil {
		cid, err = strconv.ParseInt(host, 10, 64)
	}
	var port64 uint64
	if err == nil {
		port64, err = strconv.ParseUint(p, 10, 32)
	}
	if err != nil || cid < -1 || cid > 0xffffffff {
		return 0, 0, fmt.Errorf("%w: vsock://%s: want vsock://CID:PORT", ErrUnsupportedURI, rest)
	}
	return cid, uint32(port64), nil
}

// portPath resolves a virtio-serial port: an absolute device path, or a
// port name looked up in /sys/class/virtio-ports (with a udev-style
// /dev/virtio-ports/<name> link made when udev is absent).
func portPath(rest string) (string, error) {
	if strings.HasPrefix(rest, "/") {
		return rest, nil
	}
	if strings.Contains(rest, "/") || rest == "." || rest == ".." {
		return "", fmt.Errorf("%w: serial port name %q", ErrUnsupportedURI, rest)
	}
	link := "/dev/virtio-ports/" + rest
	if _, err := os.Stat(link); err == nil {
		return link, nil
	}
	names, _ := filepath.Glob("/sys/class/virtio-ports/*/name")
	for _, n := range names {
		b, err := os.ReadFile(n)
		if err != nil || strings.TrimSpace(string(b)) != rest {
			continue
		}
		dev := "/dev/" + filepath.Base(filepath.Dir(n))
		os.MkdirAll("/dev/virtio-ports", 0o755)
		if err := os.Symlink(dev, link); err != nil && !errors.Is(err, os.ErrExist) {
			return dev, nil
		}
		return link, nil
	}
	return "", fmt.Errorf("%w: no virtio-serial port named %q", ErrUnsupportedURI, rest)
}

func listenUnix(path string) (net.Listener, error) {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(path, 0o600); err != nil {
		l.Close()
		return nil, err
	}
	return l, nil
}

type unixDialer string

func (d unixDialer) Dial(ctx context.Context) (net.Conn, error) {
	var nd net.Dialer
	return nd.DialContext(ctx, "unix", string(d))
}

func (unixDialer) Close() error { return nil }

type vsockDialer struct {
	cid, port uint32
}

func (d vsockDialer) Dial(ctx context.Context) (net.Conn, error) {
	type result struct {
		c   net.Conn
		err error
	}
	ch := make(chan result, 1)
	go func() {
		c, err := vsock.Dial(d.cid, d.port, nil)
		ch <- result{c, err}
	}()
	select {
	case r := <-ch:
		return r.c, r.err
	case <-ctx.Done():
		go func() {
			if r := <-ch; r.c != nil {
				r.c.Close()
			}
		}()
		return nil, ctx.Err()
	}
}

func (vsockDialer) Close() error { return nil }

// retryDelay paces attempts to reach something not there yet.
const retryDelay = 20 * time.Millisecond
