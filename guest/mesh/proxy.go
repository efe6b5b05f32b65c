package mesh

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"syscall"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"golang.org/x/sys/unix"

	"github.com/cocoon-cc/cocoon/internal/tcpredirect"
)

// ErrNotMeshed: a redirected connection's original destination is not one
// the rules select (the netfilter rules and mesh.toml disagree).
var ErrNotMeshed = errors.New("mesh: destination not meshed")

// Proxy terminates and originates the mesh's mTLS. Its sources are
// go-spiffe's interfaces: the Workload API's X509Source in the guest.
//
// Its TLS configurations live as long as it does, so that peers resume
// their sessions (TLS 1.3 PSK with a fresh ECDHE) instead of a full
// handshake per connection: the server's session tickets and each
// outbound rule's client session cache. A resumed session was authorized
// by the same rule's IDs when it began, and Go's TLS resumes none whose
// peer certificate has expired, so a session lasts at most as long as the
// peer's SVID.
type Proxy struct {
	cfg     *Config
	server  *tls.Config
	clients []*tls.Config // by outbound rule
	log     *slog.Logger
}

// sessionCacheSize bounds each outbound rule's cache of sessions to
// resume, one per destination address.
const sessionCacheSize = 256

// NewProxy returns a proxy for cfg presenting the SVIDs of svid and
// checking peers under bundle and cfg's federated bundles.
func NewProxy(cfg *Config, svid x509svid.Source, bundle x509bundle.Source, log *slog.Logger) *Proxy {
	bundle = federated{own: bundle, pinned: cfg.federated}
	p := &Proxy{cfg: cfg, log: log, server: tlsconfig.MTLSServerConfig(svid, bundle, tlsconfig.AuthorizeOneOf(cfg.Allowed()...))}
	for i := range cfg.Outbound {
		c := tlsconfig.MTLSClientConfig(svid, bundle, tlsconfig.AuthorizeOneOf(cfg.ruleAllowed(i)...))
		c.ClientSessionCache = tls.NewLRUClientSessionCache(sessionCacheSize)
		p.clients = append(p.clients, c)
	}
	return p
}

// federated answers the pod's own trust domain from its source (the
// bundle its KBS sealed to it) and the others from mesh.toml's pins.
type federated struct {
	own    x509bundle.Source
	pinned *x509bundle.Set
}

func (f federated) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	b, err := f.own.GetX509BundleForTrustDomain(td)
	if err != nil {
		if p, ok := f.pinned.Get(td); ok {
			return p, nil
		}
	}
	return b, err
}

// Serve runs the inbound and outbound listeners until ctx ends.
func (p *Proxy) Serve(ctx context.Context) error {
	var lc net.ListenConfig
	in, err := lc.Listen(ctx, "tcp4", net.JoinHostPort("0.0.0.0", strconv.Itoa(int(p.cfg.InboundPort))))
	if err != nil {
		return err
	}
	out, err := lc.Listen(ctx, "tcp4", net.JoinHostPort("127.0.0.1", strconv.Itoa(int(p.cfg.OutboundPort))))
	if err != nil {
		in.Close()
		return err
	}
	go func() { <-ctx.Done(); in.Close(); out.Close() }()
	errs := make(chan error, 2)
	go func() { errs <- p.accept(ctx, in, p.inbound) }()
	go func() { errs <- p.accept(ctx, out, p.outbound) }()
	err = <-errs
	in.Close()
	out.Close()
	<-errs
	if ctx.Err() != nil {
		return nil
	}
	return err
}

func (p *Proxy) accept(ctx context.Context, l net.Listener, handle func(context.Context, *net.TCPConn) error) error {
	for {
		c, err := l.Accept()
		if err != nil {
			return err
		}
		go func() {
			defer c.Close()
			if err := handle(ctx, c.(*net.TCPConn)); err != nil {
				p.log.Warn("mesh connection refused", "remote", c.RemoteAddr().String(), "err", err)
			}
		}()
	}
}

// inbound: a peer's mTLS to one of the pod's served ports, handed on in
// plain TCP to the app on loopback once the peer's ID is allowed.
func (p *Proxy) inbound(ctx context.Context, c *net.TCPConn) error {
	dst, err := originalDst(c)
	if err != nil {
		return err
	}
	if !p.cfg.inbound(dst.Port()) {
		return fmt.Errorf("%w: inbound port %d", ErrNotMeshed, dst.Port())
	}
	t := tls.Server(c, p.server)
	if err := t.HandshakeContext(ctx); err != nil {
		return err
	}
	d := net.Dialer{Control: MarkSocket}
	app, err := d.DialContext(ctx, "tcp4", net.JoinHostPort("127.0.0.1", strconv.Itoa(int(dst.Port()))))
	if err != nil {
		return err
	}
	return tcpredirect.Splice(t, app.(*net.TCPConn))
}

// outbound: the pod's plain connection to a meshed destination, carried
// to it in mTLS once the destination proves an allowed ID.
func (p *Proxy) outbound(ctx context.Context, c *net.TCPConn) error {
	dst, err := originalDst(c)
	if err != nil {
		return err
	}
	rule := p.cfg.match(dst)
	if rule < 0 {
		return fmt.Errorf("%w: outbound %s", ErrNotMeshed, dst)
	}
	d := net.Dialer{Control: MarkSocket}
	raw, err := d.DialContext(ctx, "tcp4", dst.String())
	if err != nil {
		return err
	}
	t := tls.Client(raw, p.clients[rule])
	if err := t.HandshakeContext(ctx); err != nil {
		raw.Close()
		return err
	}
	return tcpredirect.Splice(t, c)
}

// MarkSocket is a net.Dialer Control that gives a socket Mark: other
// in-guest clients (the telemetry shipper) use it so that the mesh's
// redirects leave their own TLS connections alone.
func MarkSocket(_, _ string, rc syscall.RawConn) error {
	var serr error
	err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK, Mark)
	})
	return errors.Join(err, serr)
}

// originalDst is the destination a REDIRECTed connection was made to.
func originalDst(c *net.TCPConn) (netip.AddrPort, error) {
	dst, err := tcpredirect.OriginalDst(c)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("mesh: original destination: %w", err)
	}
	return dst, nil
}
