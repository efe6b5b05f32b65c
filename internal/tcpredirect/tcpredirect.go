// Package tcpredirect serves TCP connections that netfilter REDIRECTed to a
// local listener: where they were going, and the relay that carries them
// on. The shim's loopback forwarder (runtime/network) and the guest's mesh
// proxy (guest/mesh) both stand on it.
package tcpredirect

import (
	"errors"
	"io"
	"net"
	"net/netip"
	"sync"

	"golang.org/x/sys/unix"
)

// OriginalDst is the IPv4 destination a REDIRECTed connection was made to
// (netfilter's SO_ORIGINAL_DST).
func OriginalDst(c *net.TCPConn) (netip.AddrPort, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return netip.AddrPort{}, err
	}
	var addr netip.AddrPort
	var serr error
	err = rc.Control(func(fd uintptr) {
		var mreq *unix.IPv6Mreq
		// SO_ORIGINAL_DST answers a struct sockaddr_in, which fits the
		// 20 bytes getsockopt reads into an IPv6Mreq.
		mreq, serr = unix.GetsockoptIPv6Mreq(int(fd), unix.IPPROTO_IP, unix.SO_ORIGINAL_DST)
		if serr == nil {
			m := mreq.Multiaddr
			addr = netip.AddrPortFrom(netip.AddrFrom4([4]byte{m[4], m[5], m[6], m[7]}), uint16(m[2])<<8|uint16(m[3]))
		}
	})
	if err = errors.Join(err, serr); err != nil {
		return netip.AddrPort{}, err
	}
	return addr, nil
}

// HalfCloser is a connection whose write side closes alone (*net.TCPConn,
// *tls.Conn).
type HalfCloser interface {
	net.Conn
	CloseWrite() error
}

// Splice copies both ways, passing each side's end of stream on, and
// closes both when both directions are done.
func Splice(a, b HalfCloser) error {
	defer a.Close()
	defer b.Close()
	var wg sync.WaitGroup
	var errA error
	wg.Add(1)
	go func() {
		defer wg.Done()
		_, errA = io.Copy(a, b)
		a.CloseWrite()
	}()
	_, err := io.Copy(b, a)
	b.CloseWrite()
	wg.Wait()
	return errors.Join(err, errA)
}
