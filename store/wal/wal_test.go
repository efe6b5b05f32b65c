package wal

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/cocoon-cc/cocoon/store"
	"github.com/cocoon-cc/cocoon/store/storetest"
)

var ctx = context.Background()

func open(t *testing.T, dir string) *Store {
	t.Helper()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		s := open(t, t.TempDir())
		t.Cleanup(func() { s.Close() })
		return s
	})
}

// TestGroupCommit: concurrent writers share syncs, each is answered only
// once its record is durable, and a lone writer gets a sync per write.
func TestGroupCommit(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	const writers, each = 32, 20
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				if err := s.Put(ctx, "ns", fmt.Sprint(w, "/", i), []byte("v")); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	if n := s.syncs.Load(); n > writers*each/4 {
		t.Errorf("%d syncs for %d concurrent writes", n, writers*each)
	}
	before := s.syncs.Load()
	for i := range 10 {
		s.Put(ctx, "ns", fmt.Sprint("alone/", i), []byte("v"))
	}
	if n := s.syncs.Load() - before; n != 10 {
		t.Errorf("%d syncs for 10 writes in sequence", n)
	}
	s.Close()
	s = open(t, dir)
	defer s.Close()
	if ids, _ := s.List(ctx, "ns"); len(ids) != writers*each+10 {
		t.Errorf("%d records after reopening, want %d", len(ids), writers*each+10)
	}
}

// TestReopen: puts, overwrites and deletes, in one namespace and
// another, come back from the log as they were left.
func TestReopen(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	for _, err := range []error{
		s.Put(ctx, "a", "k1", []byte("v1")), s.Put(ctx, "a", "k2", []byte("v2")),
		s.Put(ctx, "a", "k1", []byte("v1'")), s.Delete(ctx, "a", "k2"),
		s.Put(ctx, "b", "k1", []byte{}), s.Put(ctx, "b", "k\x00 odd/key", []byte("x")),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	s = open(t, dir)
	defer s.Close()
	want := map[string]string{"a/k1": "v1'", "b/k1": "", "b/k\x00 odd/key": "x"}
	for _, ns := range []string{"a", "b"} {
		keys, _ := s.List(ctx, ns)
		for _, k := range keys {
			v, err := s.Get(ctx, ns, k)
			if w, ok := want[ns+"/"+k]; !ok || err != nil || string(v) != w {
				t.Errorf("%s/%q = %q, %v", ns, k, v, err)
			}
			delete(want, ns+"/"+k)
		}
	}
	if len(want) != 0 {
		t.Errorf("missing after reopen: %v", want)
	}
}

func TestWriteAfterCloseIsAnError(t *testing.T) {
	s := open(t, t.TempDir())
	s.Close()
	if err := s.Put(ctx, "ns", "k", []byte("v")); !errors.Is(err, ErrClosed) {
		t.Fatalf("Put after Close: %v", err)
	}
}

// TestTornTail: a record the crash cut short, or garbage after the last
// record, is dropped; every record before it stays, and the store writes
// on.
func TestTornTail(t *testing.T) {
	for name, tamper := range map[string]func(b []byte) []byte{
		"cut":     func(b []byte) []byte { return b[:len(b)-3] },
		"flipped": func(b []byte) []byte { b[len(b)-2] ^= 1; return b },
		"garbage": func(b []byte) []byte { return append(b, 0xff, 0xff, 0xff, 0x7f, 1, 2, 3, 4, 5) },
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			s := open(t, dir)
			s.Put(ctx, "ns", "kept", []byte("yes"))
			s.Put(ctx, "ns", "last", []byte("maybe"))
			s.Close()
			p := filepath.Join(dir, FileName)
			b, _ := os.ReadFile(p)
			b = bytes.TrimRight(b, "\x00") // the preallocated tail
			os.WriteFile(p, tamper(b), 0o600)
			s = open(t, dir)
			if v, err := s.Get(ctx, "ns", "kept"); err != nil || string(v) != "yes" {
				t.Fatalf("record before the torn one: %q, %v", v, err)
			}
			_, err := s.Get(ctx, "ns", "last")
			if name != "garbage" && err == nil {
				t.Fatal("torn record applied")
			}
			if err := s.Put(ctx, "ns", "after", []byte("ok")); err != nil {
				t.Fatal(err)
			}
			s.Close()
			s = open(t, dir)
			defer s.Close()
			if v, _ := s.Get(ctx, "ns", "after"); string(v) != "ok" {
				t.Fatal("write after recovery lost")
			}
		})
	}
}

// TestCompaction: a log grown well past its live records is rewritten
// with them alone.
func TestCompaction(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	big := bytes.Repeat([]byte("x"), 1<<20)
	for i := range compactAt>>20 + 2 {
		if err := s.Put(ctx, "ns", "big", append(big, byte(i))); err != nil {
			t.Fatal(err)
		}
	}
	s.Put(ctx, "ns", "small", []byte("s")) // the first write past the threshold compacts
	s.Put(ctx, "ns", "other", []byte("o"))
	fi, _ := os.Stat(filepath.Join(dir, FileName))
	if fi.Size() > 2*growStep {
		t.Fatalf("log of %d bytes for about 1 MiB of records", fi.Size())
	}
	s.Close()
	s = open(t, dir)
	defer s.Close()
	for k, want := range map[string]string{"small": "s", "other": "o"} {
		if v, _ := s.Get(ctx, "ns", k); string(v) != want {
			t.Errorf("%s = %q after compaction", k, v)
		}
	}
	if v, _ := s.Get(ctx, "ns", "big"); len(v) != len(big)+1 || v[len(big)] != byte(compactAt>>20+1) {
		t.Error("big record lost by compaction")
	}
}

// crashChildEnv makes the test binary a writer that prints each key once
// its Put returned, until killed.
const crashChildEnv = "COCOON_WAL_CRASH_CHILD"

func TestMain(m *testing.M) {
	if dir := os.Getenv(crashChildEnv); dir != "" {
		s, err := Open(dir)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		var mu sync.Mutex
		var wg sync.WaitGroup
		for w := range 8 {
			wg.Go(func() {
				for i := 0; ; i++ {
					k := fmt.Sprintf("w%d-%d", w, i)
					if s.Put(ctx, "ns", k, []byte(k)) != nil {
						return
					}
					mu.Lock()
					fmt.Println(k)
					mu.Unlock()
				}
			})
		}
		wg.Wait()
	}
	os.Exit(m.Run())
}

// TestCrash kills a process writing from 8 goroutines: every write it
// acknowledged is in the store when it is opened again.
func TestCrash(t *testing.T) {
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), crashChildEnv+"="+dir)
	out, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(out)
	var acked []string
	for sc.Scan() && len(acked) < 2000 {
		acked = append(acked, sc.Text())
	}
	cmd.Process.Signal(syscall.SIGKILL)
	for sc.Scan() { // acknowledged before the kill landed
		acked = append(acked, sc.Text())
	}
	cmd.Wait()
	if len(acked) < 2000 {
		t.Fatalf("the writer acknowledged only %d writes", len(acked))
	}
	s := open(t, dir)
	defer s.Close()
	for _, k := range acked {
		if !strings.HasPrefix(k, "w") {
			continue
		}
		if v, err := s.Get(ctx, "ns", k); err != nil || string(v) != k {
			t.Fatalf("acknowledged %s lost: %q, %v", k, v, err)
		}
	}
}

// FuzzOpen: whatever the log holds, Open recovers what it can and never
// panics, and the store stays usable.
func FuzzOpen(f *testing.F) {
	f.Add(encode(nil, "ns", "k", []byte("v")))
	f.Add(append(encode(nil, "ns", "k", []byte("v")), encode(nil, "ns", "k", nil)...))
	f.Add([]byte{5, 0, 0, 0, 1, 2, 3, 4, 1, 0})
	f.Fuzz(func(t *testing.T, log []byte) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, FileName), log, 0o600); err != nil {
			t.Fatal(err)
		}
		s, err := Open(dir)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		if err := s.Put(ctx, "ns", "k2", []byte("v2")); err != nil {
			t.Fatal(err)
		}
	})
}
