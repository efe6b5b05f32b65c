package store

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
)

func ingest(t *testing.T, s *Store, d digest.Digest, size int64, content string) error {
	t.Helper()
	w, err := s.Writer(d)
	if err != nil {
		t.Fatal(err)
	}
	v := NewVerifier(strings.NewReader(content), d, size)
	if _, err := io.Copy(w, v); err != nil {
		w.Abort()
		return err
	}
	return w.Commit(v)
}

func TestIngestVerifiesBeforePublishing(t *testing.T) {
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	d := digest.FromString("layer")
	if err := ingest(t, s, d, 5, "LAYER"); !errors.Is(err, ErrDigestMismatch) {
		t.Fatalf("tampered: %v", err)
	}
	if err := ingest(t, s, d, 5, "lay"); !errors.Is(err, ErrDigestMismatch) {
		t.Fatalf("truncated: %v", err)
	}
	if err := ingest(t, s, d, 3, "layer"); !errors.Is(err, ErrDigestMismatch) {
		t.Fatalf("oversized: %v", err)
	}
	if _, err := s.Open(d); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unverified content published: %v", err)
	}
	if err := ingest(t, s, d, 5, "layer"); err != nil {
		t.Fatal(err)
	}
	f, err := s.Open(d)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if b, _ := io.ReadAll(f); !bytes.Equal(b, []byte("layer")) {
		t.Fatalf("content %q", b)
	}
	if _, err := s.Open("sha256:xyz"); err == nil {
		t.Fatal("bad digest accepted")
	}
}
