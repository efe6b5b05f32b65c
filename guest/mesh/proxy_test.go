package mesh

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/url"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/cocoon-cc/cocoon/internal/testutil"
)

// testProxies are the server and client proxies of two pods of one trust
// domain (a P-256 CA, as the KBS's), each allowing the other; the client's
// second outbound rule wants /db, which the server is not.
func testProxies(b testing.TB) (server, client *Proxy) {
	b.Helper()
	td := spiffeid.RequireTrustDomainFromString("example.org")
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign, URIs: []*url.URL{td.ID().URL()}}
	ca := testutil.Certificate(b, tmpl, tmpl, caKey.Public(), caKey)
	bundle := x509bundle.FromX509Authorities(td, []*x509.Certificate{ca})
	svid := func(path string) *x509svid.SVID {
		id := spiffeid.RequireFromPath(td, path)
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		leaf := testutil.Certificate(b, &x509.Certificate{SerialNumber: big.NewInt(2), NotBefore: tmpl.NotBefore, NotAfter: tmpl.NotAfter,
			KeyUsage: x509.KeyUsageDigitalSignature, URIs: []*url.URL{id.URL()}}, ca, key.Public(), caKey)
		return &x509svid.SVID{ID: id, Certificates: []*x509.Certificate{leaf}, PrivateKey: key}
	}
	log := slog.New(slog.DiscardHandler)
	webCfg, err := ParseConfig("allow = [\"spiffe://example.org/front\"]\ninbound_ports = [8080]\n")
	if err != nil {
		b.Fatal(err)
	}
	frontCfg, err := ParseConfig("allow = [\"spiffe://example.org/web\"]\n[[outbound]]\ncidr = \"10.0.0.0/8\"\n" +
		"[[outbound]]\ncidr = \"0.0.0.0/0\"\nallow = [\"spiffe://example.org/db\"]\n")
	if err != nil {
		b.Fatal(err)
	}
	return NewProxy(webCfg, svid("/web"), bundle, log), NewProxy(frontCfg, svid("/front"), bundle, log)
}

// pair is a client and server TLS connection of the proxies' configs over
// loopback TCP through l, handshaken.
func pair(b testing.TB, l net.Listener, server, client *tls.Config) (*tls.Conn, *tls.Conn) {
	b.Helper()
	tc, ts, err := tryPair(l, server, client)
	if err != nil {
		b.Fatal(err)
	}
	return tc, ts
}

func tryPair(l net.Listener, server, client *tls.Config) (*tls.Conn, *tls.Conn, error) {
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		return nil, nil, err
	}
	s, err := l.Accept()
	if err != nil {
		c.Close()
		return nil, nil, err
	}
	tc, ts := tls.Client(c, client), tls.Server(s, server)
	errs := make(chan error, 1)
	go func() {
		err := ts.Handshake()
		if err == nil {
			// TLS 1.3 tickets follow the handshake: the client reads
			// them with this byte.
			_, err = ts.Write([]byte{1})
		}
		errs <- err
	}()
	err = tc.Handshake()
	if err == nil {
		_, err = io.ReadFull(tc, make([]byte, 1))
	}
	if err != nil {
		c.Close()
		s.Close()
	}
	if serr := <-errs; err == nil && serr != nil {
		err = serr
	}
	return tc, ts, err
}

// listen is a loopback listener: the clients' session cache key is its
// address.
func listen(t testing.TB) net.Listener {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// TestResumption: a second connection resumes the first's session; a rule
// wanting another ID does not take the session its neighbour cached for
// the same address and refuses the server.
func TestResumption(t *testing.T) {
	web, front := testProxies(t)
	l := listen(t)
	for i, want := range []bool{false, true} {
		tc, ts := pair(t, l, web.server, front.clients[0])
		if tc.ConnectionState().DidResume != want {
			t.Errorf("connection %d resumed: %v", i, !want)
		}
		tc.Close()
		ts.Close()
	}
	if _, _, err := tryPair(l, web.server, front.clients[1]); err == nil {
		t.Error("the rule wanting spiffe://example.org/db accepted the web server")
	}
}

// BenchmarkHandshake: a connection's mTLS handshake between two proxies,
// full (no session cache: ECDHE, both certificates signed for and
// verified) and resumed (the proxies' own configurations: PSK and ECDHE).
// Run it under qemu-x86_64 -cpu max to see a TCG guest's cost.
func BenchmarkHandshake(b *testing.B) {
	web, front := testProxies(b)
	l := listen(b)
	full := front.clients[0].Clone()
	full.ClientSessionCache = nil
	for _, bc := range []struct {
		name   string
		client *tls.Config
	}{{"full", full}, {"resumed", front.clients[0]}} {
		b.Run(bc.name, func(b *testing.B) {
			resumed := 0
			for b.Loop() {
				tc, ts := pair(b, l, web.server, bc.client)
				if tc.ConnectionState().DidResume {
					resumed++
				}
				tc.Close()
				ts.Close()
			}
			b.ReportMetric(float64(resumed)/float64(b.N), "resumed/op")
		})
	}
}

// BenchmarkRecords: bulk data through an established mesh connection
// (TLS 1.3 records as the proxies' io.Copy writes them), the cipher suite
// Go picks for the CPU (AES-128-GCM where it has AES-NI and PCLMULQDQ,
// as TCG's -cpu max does).
func BenchmarkRecords(b *testing.B) {
	web, front := testProxies(b)
	tc, ts := pair(b, listen(b), web.server, front.clients[0])
	defer tc.Close()
	defer ts.Close()
	b.Logf("cipher suite %s", tls.CipherSuiteName(tc.ConnectionState().CipherSuite))
	buf := make([]byte, 32<<10) // io.Copy's buffer
	go io.Copy(io.Discard, ts)
	b.SetBytes(int64(len(buf)))
	for b.Loop() {
		if _, err := tc.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
}
