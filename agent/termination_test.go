package agent

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// TestReadTerminationMessage: the end of the copied file mounted at the
// path (what the kubelet reads of the host's), and nothing but a copied
// regular file.
func TestReadTerminationMessage(t *testing.T) {
	shared := t.TempDir()
	long := bytes.Repeat([]byte("0123456789"), 500)
	files := map[string][]byte{"c-1-log": []byte("bye\n"), "c-2-long": long}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(shared, name), b, 0o666); err != nil {
			t.Fatal(err)
		}
	}
	os.Mkdir(filepath.Join(shared, "c-3-dir"), 0o755)
	os.Symlink("c-1-log", filepath.Join(shared, "c-4-link"))
	bind := func(dest, src string) specs.Mount {
		return specs.Mount{Destination: dest, Source: src, Type: "bind", Options: []string{"rbind"}}
	}
	mounts := []specs.Mount{
		bind("/dev/termination-log", filepath.Join(shared, "c-1-log")),
		bind("/tmp/long", filepath.Join(shared, "c-2-long")),
		bind("/tmp/dir", filepath.Join(shared, "c-3-dir")),
		bind("/tmp/link", filepath.Join(shared, "c-4-link")),
		bind("/data", "/run/kata-containers/sandbox/storage/data"),
		{Destination: "/proc", Type: "proc", Source: "proc"},
	}
	for dest, want := range map[string][]byte{"/dev/termination-log": []byte("bye\n"), "/tmp/../dev/termination-log": []byte("bye\n"),
		"/tmp/long": long[len(long)-TerminationMessageMax:]} {
		if got, err := readTerminationMessage(shared, mounts, dest); err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s: %q %v, want %q", dest, got, err, want)
		}
	}
	for _, dest := range []string{"/tmp/dir", "/tmp/link", "/data", "/proc", "/etc/passwd"} {
		if got, err := readTerminationMessage(shared, mounts, dest); err == nil {
			t.Errorf("%s: %q, want an error", dest, got)
		} else if !errors.Is(err, ErrInvalidArgument) && !errors.Is(err, ErrNotFound) {
			t.Errorf("%s: %v, want a typed error", dest, err)
		}
	}
}
