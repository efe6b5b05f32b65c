package unpack

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	it "github.com/cocoon-cc/cocoon/image/imagetest"
)

func TestLargeFilesAndTruncation(t *testing.T) {
	big := make([]byte, 3*writeBuffer+17)
	rand.Read(big)
	layer := it.Tar(t, it.File("big", string(big), 0o644), it.File("small", "small", 0o600),
		it.File("exact", string(big[:writeBuffer]), 0o644))
	root := t.TempDir()
	if _, err := Apply(context.Background(), root, bytes.NewReader(layer), Options{}); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string][]byte{"big": big, "small": []byte("small"), "exact": big[:writeBuffer]} {
		if got, err := os.ReadFile(filepath.Join(root, name)); err != nil || !bytes.Equal(got, want) {
			t.Fatalf("%s: %d bytes, %v", name, len(got), err)
		}
	}
	// Cut inside the big file's content: an error, never a short file
	// taken for whole.
	for _, cut := range []int{1024 + writeBuffer + 5, 1024 + 10} {
		_, err := Apply(context.Background(), t.TempDir(), bytes.NewReader(layer[:cut]), Options{})
		if !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("cut at %d: err = %v", cut, err)
		}
	}
}
