// Package kbstest runs an in-process KBS for the tests of the KBS's
// clients: the sample TEE's verifier, a memory store, HTTP or HTTPS on
// loopback and the generated admin key.
package kbstest

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/cocoon-cc/cocoon/attestation/verifier"
	sampleverifier "github.com/cocoon-cc/cocoon/attestation/verifier/sample"
	"github.com/cocoon-cc/cocoon/guest/attester/sample"
	"github.com/cocoon-cc/cocoon/guest/spiffe"
	"github.com/cocoon-cc/cocoon/kbs"
	"github.com/cocoon-cc/cocoon/kbs/client"
	"github.com/cocoon-cc/cocoon/protocol"
)

// KBS is a running KBS.
type KBS struct {
	URL      string
	HTTP     *http.Client // trusts the KBS's certificate with TLS
	AdminKey crypto.Signer
	Admin    *client.Admin
}

// Options shape the KBS.
type Options struct {
	TLS bool
	// Extra is more configuration (TOML), after the test's own.
	Extra string
}

// Start runs a KBS until the test ends.
func Start(t testing.TB, o Options) *KBS {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	cfg, err := kbs.ParseConfig([]byte(fmt.Sprintf("data_dir = %q\n[http_server]\ninsecure_http = true\n[storage_backend]\nstorage_type = \"Memory\"\n%s",
		dir, o.Extra)), log)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := kbs.New(ctx, cfg, verifier.Registry{protocol.TeeSample: sampleverifier.Verifier{}}, log)
	if err != nil {
		t.Fatal(err)
	}
	var ts *httptest.Server
	if o.TLS {
		ts = httptest.NewTLSServer(srv.Handler())
	} else {
		ts = httptest.NewServer(srv.Handler())
	}
	t.Cleanup(func() { ts.Close(); srv.Close() })
	k, err := client.LoadSigningKey(filepath.Join(dir, "admin", "private.key"))
	if err != nil {
		t.Fatal(err)
	}
	return &KBS{URL: ts.URL, HTTP: ts.Client(), AdminKey: k, Admin: client.NewAdminWithKey(ts.URL+"/", ts.Client(), k)}
}

// SPIFFESource starts a KBS issuing SVIDs of trust domain example.org to
// anyone and returns a guest's SVID source for id (/ns/...), ready, with
// the KBS's SPIFFE CA in PEM: what a peer trusts for the guest.
func SPIFFESource(t testing.TB, ctx context.Context, id string) (*spiffe.Source, []byte) {
	t.Helper()
	k := Start(t, Options{Extra: "[spiffe]\ntrust_domain = \"example.org\"\n"})
	if err := k.Admin.SetSPIFFEPolicy(ctx, "package policy\nimport rego.v1\ndefault allow := true\n"); err != nil {
		t.Fatal(err)
	}
	initdata := "version = \"0.1.0\"\nalgorithm = \"sha384\"\n[data]\n\"spiffe.toml\" = 'id = \"" + id + "\"'\n"
	c, err := client.New(k.URL, sample.Attester{}, client.Options{InitData: []byte(initdata)})
	if err != nil {
		t.Fatal(err)
	}
	src := spiffe.NewSource(c, slog.New(slog.NewTextHandler(io.Discard, nil)))
	go src.Run(ctx)
	select {
	case <-src.Ready():
	case <-ctx.Done():
		t.Fatal("no SVID from the KBS")
	}
	b, err := src.Bundle()
	if err != nil {
		t.Fatal(err)
	}
	return src, authoritiesPEM(b.X509Authorities())
}

// BundleCA is the SPIFFE CA of trust domain td in PEM, from the bundle
// endpoint of the KBS at url: what the owner's collector trusts for
// guests' client certificates.
func BundleCA(t testing.TB, url, td string) []byte {
	t.Helper()
	resp, err := http.Get(url + "/kbs/v0/spiffe/bundle")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	bundle, err := spiffebundle.Parse(spiffeid.RequireTrustDomainFromString(td), b)
	if err != nil {
		t.Fatalf("the KBS's SPIFFE bundle: %v", err)
	}
	return authoritiesPEM(bundle.X509Authorities())
}

func authoritiesPEM(certs []*x509.Certificate) []byte {
	var ca bytes.Buffer
	for _, c := range certs {
		pem.Encode(&ca, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
	}
	return ca.Bytes()
}
