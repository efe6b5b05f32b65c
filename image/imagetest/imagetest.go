// Package imagetest builds OCI images from tar entries for tests: layers,
// config, manifest and an OCI image layout directory that skopeo and umoci
// read.
package imagetest

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Entry is one tar entry; Body is the content of a regular file.
type Entry struct {
	tar.Header
	Body string
}

// File, Dir, Symlink, Link and Whiteout make common entries.
func File(name, body string, mode int64) Entry {
	return Entry{Header: tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Size: int64(len(body))}, Body: body}
}

// Dir makes a directory entry.
func Dir(name string, mode int64) Entry {
	return Entry{Header: tar.Header{Typeflag: tar.TypeDir, Name: name, Mode: mode}}
}

// Symlink makes a symlink entry.
func Symlink(name, target string) Entry {
	return Entry{Header: tar.Header{Typeflag: tar.TypeSymlink, Name: name, Linkname: target, Mode: 0o777}}
}

// Link makes a hard link entry.
func Link(name, target string) Entry {
	return Entry{Header: tar.Header{Typeflag: tar.TypeLink, Name: name, Linkname: target}}
}

// Tar writes entries as a tar stream.
func Tar(t testing.TB, entries ...Entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	mtime := time.Unix(1700000000, 0)
	for _, e := range entries {
		h := e.Header
		if h.ModTime.IsZero() {
			h.ModTime = mtime
		}
		h.Format = tar.FormatPAX
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatal(err)
		}
		if _, err := io.WriteString(tw, e.Body); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// Gzip compresses b.
func Gzip(t testing.TB, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write(b)
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// Zstd compresses b.
func Zstd(t testing.TB, b []byte) []byte {
	t.Helper()
	enc, err := zstd.NewWriter(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer enc.Close()
	return enc.EncodeAll(b, nil)
}

// Layer is a compressed layer blob and its diff ID.
type Layer struct {
	MediaType   string
	Blob        []byte
	DiffID      digest.Digest
	Annotations map[string]string
}

// GzipLayer makes a gzip layer of entries.
func GzipLayer(t testing.TB, entries ...Entry) Layer {
	raw := Tar(t, entries...)
	return Layer{MediaType: ocispec.MediaTypeImageLayerGzip, Blob: Gzip(t, raw), DiffID: digest.FromBytes(raw)}
}

// ZstdLayer makes a zstd layer of entries.
func ZstdLayer(t testing.TB, entries ...Entry) Layer {
	raw := Tar(t, entries...)
	return Layer{MediaType: ocispec.MediaTypeImageLayerZstd, Blob: Zstd(t, raw), DiffID: digest.FromBytes(raw)}
}

// Image is a built single-platform image.
type Image struct {
	Config   []byte
	Manifest []byte
	Layers   []Layer
}

// New builds an image for linux/amd64 from layers and a runtime config.
func New(t testing.TB, rc ocispec.ImageConfig, layers ...Layer) *Image {
	t.Helper()
	cfg := ocispec.Image{
		Platform: ocispec.Platform{OS: "linux", Architecture: "amd64"},
		Config:   rc,
		RootFS:   ocispec.RootFS{Type: "layers"},
	}
	m := ocispec.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest}
	for _, l := range layers {
		cfg.RootFS.DiffIDs = append(cfg.RootFS.DiffIDs, l.DiffID)
		d := Descriptor(l.MediaType, l.Blob)
		d.Annotations = l.Annotations
		m.Layers = append(m.Layers, d)
	}
	img := &Image{Layers: layers}
	img.Config = mustJSON(t, cfg)
	m.Config = Descriptor(ocispec.MediaTypeImageConfig, img.Config)
	img.Manifest = mustJSON(t, m)
	return img
}

// Descriptor describes b.
func Descriptor(mediaType string, b []byte) ocispec.Descriptor {
	return ocispec.Descriptor{MediaType: mediaType, Digest: digest.FromBytes(b), Size: int64(len(b))}
}

// WriteLayout writes img as an OCI image layout in dir, tagged tag.
func (img *Image) WriteLayout(t testing.TB, dir, tag string) {
	t.Helper()
	blobs := filepath.Join(dir, "blobs", "sha256")
	if err := os.MkdirAll(blobs, 0o755); err != nil {
		t.Fatal(err)
	}
	put := func(b []byte) {
		if err := os.WriteFile(filepath.Join(blobs, digest.FromBytes(b).Encoded()), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	put(img.Config)
	put(img.Manifest)
	for _, l := range img.Layers {
		put(l.Blob)
	}
	md := Descriptor(ocispec.MediaTypeImageManifest, img.Manifest)
	md.Annotations = map[string]string{ocispec.AnnotationRefName: tag}
	idx := ocispec.Index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageIndex,
		Manifests: []ocispec.Descriptor{md}}
	write(t, filepath.Join(dir, "index.json"), mustJSON(t, idx))
	write(t, filepath.Join(dir, ocispec.ImageLayoutFile), []byte(`{"imageLayoutVersion":"1.0.0"}`))
}

func write(t testing.TB, p string, b []byte) {
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func mustJSON(t testing.TB, v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
