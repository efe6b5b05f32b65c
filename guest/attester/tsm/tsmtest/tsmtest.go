// Package tsmtest plays the kernel's side of configfs-tsm for tests on
// machines without a TEE: entries are real directories whose outblob and
// auxblob are FIFOs, filled when read, as the kernel generates the report
// when outblob is read.
package tsmtest

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Kernel serves report entries under Root.
type Kernel struct {
	Root     string
	Provider string
	// Report answers an inblob (and privlevel, "" when unset) with the
	// outblob and auxblob.
	Report func(inblob []byte, privlevel string) (out, aux []byte)
	t      testing.TB
	served sync.WaitGroup
	stop   chan struct{}
}

// New makes a report directory in a temporary directory.
func New(t testing.TB, provider string, report func(inblob []byte, privlevel string) (out, aux []byte)) *Kernel {
	k := &Kernel{Root: filepath.Join(t.TempDir(), "report"), Provider: provider, Report: report, t: t, stop: make(chan struct{})}
	if err := os.Mkdir(k.Root, 0o755); err != nil {
		t.Fatal(err)
	}
	// Runs after the blobs are released and before the directory is
	// removed, so no serve goroutine writes into a directory being deleted.
	t.Cleanup(func() { close(k.stop); k.served.Wait() })
	return k
}

// Mkdir is tsm.Client.Mkdir: it makes an entry with its attributes.
func (k *Kernel) Mkdir(dir, pattern string) (string, error) {
	entry, err := os.MkdirTemp(dir, pattern)
	if err != nil {
		return "", err
	}
	for name, data := range map[string]string{"provider": k.Provider + "\n", "generation": "0\n", "inblob": "", "privlevel": ""} {
		if err := os.WriteFile(filepath.Join(entry, name), []byte(data), 0o644); err != nil {
			return "", err
		}
	}
	for _, name := range []string{"outblob", "auxblob"} {
		fifo := filepath.Join(entry, name)
		if err := syscall.Mkfifo(fifo, 0o644); err != nil {
			return "", err
		}
		k.served.Add(1)
		go func() { defer k.served.Done(); k.serve(entry, name) }()
	}
	return entry, nil
}

// serve waits for a reader of the blob, then generates the report from
// what was written to the entry.
func (k *Kernel) serve(entry, name string) {
	f := k.awaitReader(filepath.Join(entry, name))
	if f == nil {
		return
	}
	defer f.Close()
	in, _ := os.ReadFile(filepath.Join(entry, "inblob"))
	priv, _ := os.ReadFile(filepath.Join(entry, "privlevel"))
	gen := 0
	if len(in) > 0 {
		gen++
	}
	if len(priv) > 0 {
		gen++
	}
	os.WriteFile(filepath.Join(entry, "generation"), []byte(strconv.Itoa(gen)+"\n"), 0o644)
	out, aux := k.Report(in, string(priv))
	if name == "outblob" {
		f.Write(out)
	} else {
		f.Write(aux)
	}
}

// awaitReader opens the fifo for writing once a reader has it open, or
// returns nil when the test ends first (a blob nobody reads).
func (k *Kernel) awaitReader(fifo string) *os.File {
	for {
		f, err := os.OpenFile(fifo, os.O_WRONLY|syscall.O_NONBLOCK, 0)
		if err == nil {
			return f
		}
		if !errors.Is(err, syscall.ENXIO) { // ENXIO: no reader yet
			return nil
		}
		select {
		case <-k.stop:
			return nil
		case <-time.After(time.Millisecond):
		}
	}
}
