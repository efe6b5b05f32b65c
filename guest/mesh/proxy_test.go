package mesh

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/url"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/cocoon-cc/cocoon/internal/testutil"
)

// testCA is a trust domain's P-256 CA (as the KBS's): its bundle and a
// maker of SVIDs for paths below it.
func testCA(t testing.TB, name string) (*x509bundle.Bundle, func(path string) *x509svid.SVID) {
	td := spiffeid.RequireTrustDomainFromString(name)
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign, URIs: []*url.URL{td.ID().URL()}}
	ca := testutil.Certificate(t, tmpl, tmpl, caKey.Public(), caKey)
	return x509bundle.FromX509Authorities(td, []*x509.Certificate{ca}), func(path string) *x509svid.SVID {
		id := spiffeid.RequireFromPath(td, path)
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		leaf := testutil.Certificate(t, &x509.Certificate{SerialNumber: big.NewInt(2), NotBefore: tmpl.NotBefore, NotAfter: tmpl.NotAfter,
			KeyUsage: x509.KeyUsageDigitalSignature, URIs: []*url.URL{id.URL()}}, ca, key.Public(), caKey)
		return &x509svid.SVID{ID: id, Certificates: []*x509.Certificate{leaf}, PrivateKey: key}
	}
}

// testProxies are the server and client proxies of two pods of one trust
// domain, each allowing the other; the client's second outbound rule wants
// /db, which the server is not.
func testProxies(t testing.TB) (server, client *Proxy) {
	t.Helper()
	bundle, svid := testCA(t, "example.org")
	return testProxy(t, "allow = [\"spiffe://example.org/front\"]\ninbound_ports = [8080]\n", svid("/web"), bundle),
		testProxy(t, "allow = [\"spiffe://example.org/web\"]\n[[outbound]]\ncidr = \"10.0.0.0/8\"\n"+
			"[[outbound]]\ncidr = \"0.0.0.0/0\"\nallow = [\"spiffe://example.org/db\"]\n", svid("/front"), bundle)
}

func testProxy(t testing.TB, meshToml string, svid *x509svid.SVID, bundle *x509bundle.Bundle) *Proxy {
	t.Helper()
	cfg, err := ParseConfig(meshToml)
	if err != nil {
		t.Fatal(err)
	}
	return NewProxy(cfg, svid, bundle, slog.New(slog.DiscardHandler))
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

// TestFederation: a peer of another trust domain (an Istio workload with
// its mesh's certificate) whose ID the rules allow is served once
// mesh.toml pins its trust domain's roots, and refused without the pin or
// with a certificate from another CA than the pinned one.
func TestFederation(t *testing.T) {
	istio, gw := testCA(t, "cluster.local")
	_, forged := testCA(t, "cluster.local")
	var roots []byte
	for _, c := range istio.X509Authorities() {
		roots = append(roots, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	own, svid := testCA(t, "example.org")
	allow := "allow = [\"spiffe://cluster.local/ns/istio/sa/gw\"]\ninbound_ports = [8080]\n"
	pinned := testProxy(t, allow+"[[federate]]\ntrust_domain = \"cluster.local\"\nbundle = \"\"\"\n"+string(roots)+"\"\"\"\n", svid("/web"), own)
	unpinned := testProxy(t, allow, svid("/web"), own)
	l := listen(t)
	for _, tc := range []struct {
		name   string
		server *Proxy
		svid   *x509svid.SVID
		ok     bool
	}{
		{"pinned", pinned, gw("/ns/istio/sa/gw"), true},
		{"unpinned", unpinned, gw("/ns/istio/sa/gw"), false},
		{"another CA", pinned, forged("/ns/istio/sa/gw"), false},
	} {
		// The Istio side federates with the pod's trust domain and checks
		// the server's ID.
		client := tlsconfig.MTLSClientConfig(tc.svid, x509bundle.NewSet(own, istio), tlsconfig.AuthorizeID(svid("/web").ID))
		_, _, err := tryPair(l, tc.server.server, client)
		if (err == nil) != tc.ok {
			t.Errorf("%s: handshake error %v, want success %v", tc.name, err, tc.ok)
		}
		t.Logf("%s: %v", tc.name, err)
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
