// Package kbstest runs an in-process KBS for the tests of the KBS's
// clients: the sample TEE's verifier, a memory store, HTTP or HTTPS on
// loopback and the generated admin key.
package kbstest

import (
	"context"
	"crypto"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"

	"github.com/cocoon-cc/cocoon/attestation/verifier"
	sampleverifier "github.com/cocoon-cc/cocoon/attestation/verifier/sample"
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
