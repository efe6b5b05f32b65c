package pull

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cocoon-cc/cocoon/image/imagetest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// TestPullDownloadsAhead: with a slow registry, later layers download while
// earlier ones are applied, each blob once, and the layers still apply in
// order (the last one's file wins).
func TestPullDownloadsAhead(t *testing.T) {
	e := newEnv(t)
	var layers []imagetest.Layer
	for i := range 4 {
		layers = append(layers, imagetest.GzipLayer(t,
			imagetest.File("etc/version", fmt.Sprint(i), 0o644),
			imagetest.File(fmt.Sprintf("srv/%d", i), "layer", 0o644)))
	}
	e.reg.Push(t, imagetest.New(t, ocispec.ImageConfig{}, layers...), "cocoon/many:v1", nil)
	e.f.delay.Store(int64(150 * time.Millisecond))
	dir := filepath.Join(e.parent, "bundle")
	if _, err := e.puller(Options{MaxConcurrentDownloads: 2}).Pull(context.Background(), "example.com/cocoon/many:v1", dir); err != nil {
		t.Fatal(err)
	}
	if got := e.f.maxFlight.Load(); got < 2 || got > 3 {
		t.Fatalf("at most %d blob downloads at once, want 2 or 3 (2 ahead + the one streaming)", got)
	}
	if got := e.f.blobGets.Load(); got != 5 {
		t.Fatalf("%d blob GETs, want 5 (config and 4 layers, once each)", got)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "rootfs/etc/version")); err != nil || string(b) != "3" {
		t.Fatalf("etc/version = %q, %v: layers applied out of order", b, err)
	}
}
