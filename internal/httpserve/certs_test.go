package httpserve

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/pem"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cocoon-cc/cocoon/internal/testutil"
)

// keyPair writes a fresh certificate for name and its key to dir as
// cert.pem and key.pem, each by rename (a new inode, as a Secret volume's
// update gives), and returns the certificate's DER.
func keyPair(t *testing.T, dir, name string) []byte {
	t.Helper()
	_, cert, key := testutil.ServerPKI(t, nil, name)
	replace(t, filepath.Join(dir, "cert.pem"), cert)
	replace(t, filepath.Join(dir, "key.pem"), key)
	block, _ := pem.Decode(cert)
	return block.Bytes
}

func replace(t *testing.T, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path+".new", b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path+".new", path); err != nil {
		t.Fatal(err)
	}
}

func served(t *testing.T, r *certReloader) []byte {
	t.Helper()
	c, err := r.GetCertificate(nil)
	if err != nil {
		t.Fatal(err)
	}
	return c.Certificate[0]
}

// TestCertReloader: a renewed pair is served once its files changed and
// the check is due; a pair that does not load (a key of another
// certificate, as between the two files' updates) keeps the previous one.
func TestCertReloader(t *testing.T) {
	dir := t.TempDir()
	a := keyPair(t, dir, "a.example")
	r, err := newCertReloader(filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem"), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	b := keyPair(t, dir, "b.example")
	if !bytes.Equal(served(t, r), a) {
		t.Fatal("reloaded before the check was due")
	}
	r.checked = time.Time{}
	if !bytes.Equal(served(t, r), b) {
		t.Fatal("the renewed certificate is not served")
	}
	// A new certificate whose key has not been written yet.
	keyB, _ := os.ReadFile(filepath.Join(dir, "key.pem"))
	keyPair(t, dir, "c.example")
	replace(t, filepath.Join(dir, "key.pem"), keyB)
	r.checked = time.Time{}
	if !bytes.Equal(served(t, r), b) {
		t.Fatal("a mismatched pair replaced the served one")
	}
	if _, err := newCertReloader(filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem"), nil); err == nil {
		t.Error("a mismatched pair loaded at start")
	}
}

// TestServeTLS: Serve presents the files' certificate.
func TestServeTLS(t *testing.T) {
	dir := t.TempDir()
	a := keyPair(t, dir, "a.example")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	addrs := make(chan []net.Addr, 1)
	done := make(chan error, 1)
	go func() {
		done <- Serve(ctx, Config{Sockets: []string{"127.0.0.1:0"}, CertFile: filepath.Join(dir, "cert.pem"), KeyFile: filepath.Join(dir, "key.pem")},
			http.NotFoundHandler(), slog.New(slog.NewTextHandler(io.Discard, nil)), func(a []net.Addr) { addrs <- a })
	}()
	var addr string
	select {
	case a := <-addrs:
		addr = a[0].String()
	case err := <-done:
		t.Fatal(err)
	}
	conn, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(conn.ConnectionState().PeerCertificates[0].Raw, a) {
		t.Error("Serve presents another certificate")
	}
	conn.Close()
	cancel()
	if err := <-done; err != nil {
		t.Error(err)
	}
}
