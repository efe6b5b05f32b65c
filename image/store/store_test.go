package store

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
)

func TestVerifier(t *testing.T) {
	d := digest.FromString("layer")
	read := func(content string, size int64) error {
		_, err := io.Copy(io.Discard, NewVerifier(strings.NewReader(content), d, size))
		return err
	}
	for name, c := range map[string]struct {
		content string
		size    int64
	}{"tampered": {"LAYER", 5}, "truncated": {"lay", 5}, "oversized": {"layer", 3}, "wrong size": {"layer", 6}} {
		if err := read(c.content, c.size); !errors.Is(err, ErrDigestMismatch) {
			t.Errorf("%s: %v", name, err)
		}
	}
	if err := read("layer", 5); err != nil {
		t.Fatal(err)
	}
	if err := read("layer", -1); err != nil {
		t.Fatal(err)
	}
}

func TestLayers(t *testing.T) {
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	chain := digest.FromString("chain")
	if _, ok := s.Layer(chain); ok {
		t.Fatal("empty store has a layer")
	}
	if _, ok := s.Layer("sha256:xyz"); ok {
		t.Fatal("bad digest found")
	}
	commit := func(content string) string {
		t.Helper()
		in, err := s.Ingest()
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(in, "f"), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		dir, err := s.Commit(in, chain)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(in); !os.IsNotExist(err) {
			t.Fatalf("ingest %s left: %v", in, err)
		}
		return dir
	}
	dir := commit("first")
	if got, ok := s.Layer(chain); !ok || got != dir {
		t.Fatalf("Layer = %s %v, want %s", got, ok, dir)
	}
	// A concurrent pull that committed the same layer second keeps the
	// first copy.
	if again := commit("second"); again != dir {
		t.Fatalf("second commit at %s", again)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "f")); string(b) != "first" {
		t.Fatalf("layer content %q", b)
	}
	in, _ := s.Ingest()
	s.Abort(in)
	if _, err := os.Stat(in); !os.IsNotExist(err) {
		t.Fatal("Abort left the ingest")
	}
	if _, err := s.Commit(in, "md5:abc"); err == nil {
		t.Fatal("bad chain ID accepted")
	}
}
