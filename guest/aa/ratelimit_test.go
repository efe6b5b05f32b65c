package aa

import (
	"context"
	"io"
	"log/slog"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/cocoon-cc/cocoon/attestation/verifier"
	sampleverifier "github.com/cocoon-cc/cocoon/attestation/verifier/sample"
	"github.com/cocoon-cc/cocoon/guest/attester/sample"
	"github.com/cocoon-cc/cocoon/kbs"
	"github.com/cocoon-cc/cocoon/protocol"
)

// TestTokenRetriesRateLimit: a KBS that answers 429 (this address spent
// its bucket) is asked again after the backoff, not given up on.
func TestTokenRetriesRateLimit(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	// Two calls at once (one handshake), then one every 50 ms.
	cfg, err := kbs.ParseConfig([]byte(`data_dir = "`+t.TempDir()+`"
[http_server]
insecure_http = true
[storage_backend]
storage_type = "Memory"
[limits]
rcar_rate = 20
rcar_burst = 2
`), log)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := kbs.New(context.Background(), cfg, verifier.Registry{protocol.TeeSample: sampleverifier.Verifier{}}, log)
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv.Handler())
	t.Cleanup(func() {
		ts.Close()
		srv.Close()
	})
	for i := range 2 { // the second guest finds the bucket empty
		a, _ := New(Options{Config: Config{TokenConfigs: TokenConfigs{KBS: &KBSConfig{URL: ts.URL}}},
			Attester: sample.Attester{}, Retry: Retry{Attempts: 3, Backoff: 200 * time.Millisecond}})
		if _, err := a.Token(context.Background(), "kbs"); err != nil {
			t.Fatalf("guest %d: %v", i, err)
		}
	}
}
