package pull

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/cocoon-cc/cocoon/image/imagetest"
	"github.com/cocoon-cc/cocoon/image/registry"
	"github.com/cocoon-cc/cocoon/image/store"
	"github.com/klauspost/compress/gzip"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// benchImage is 64 MiB of incompressible files in 4 MiB pieces.
func benchImage(b *testing.B) *imagetest.Image {
	var entries []imagetest.Entry
	for i := range 16 {
		buf := make([]byte, 4<<20)
		rand.Read(buf)
		entries = append(entries, imagetest.File(filepath.Join("data", string(rune('a'+i))), string(buf), 0o644))
	}
	return imagetest.New(b, ocispec.ImageConfig{}, imagetest.GzipLayer(b, entries...))
}

// BenchmarkPull pulls and unpacks from docker-registry; BenchmarkFloor is
// one pass of read + SHA-256 (blob and diff_id) + gunzip over the same
// stored blob, the least any pull must do.
func BenchmarkPull(b *testing.B) {
	reg := imagetest.StartRegistry(b)
	img := benchImage(b)
	reg.Push(b, img, "cocoon/bench:v1", nil)
	conf, err := registry.Parse([]byte("[[registry]]\nlocation = \"" + reg.Host + "\"\ninsecure = true\n"))
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(img.Layers[0].Blob)))
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		dir := b.TempDir()
		st, err := store.Open(filepath.Join(dir, "store"))
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		if _, err := New(st, Options{Registries: conf}).Pull(context.Background(), reg.Host+"/cocoon/bench:v1", filepath.Join(dir, "bundle")); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkFloor(b *testing.B) {
	reg := imagetest.StartRegistry(b)
	img := benchImage(b)
	reg.Push(b, img, "cocoon/bench:v1", nil)
	path := reg.BlobPath(digest.FromBytes(img.Layers[0].Blob).Encoded())
	b.SetBytes(int64(len(img.Layers[0].Blob)))
	b.ResetTimer()
	for range b.N {
		f, _ := os.Open(path)
		h1, h2 := sha256.New(), sha256.New()
		zr, err := gzip.NewReader(io.TeeReader(f, h1))
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(h2, zr)
		f.Close()
	}
}
