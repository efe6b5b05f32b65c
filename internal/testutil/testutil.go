// Package testutil finds the test inputs that live outside the repository:
// the shared real-hardware fixtures and the testdata of Go modules.
package testutil

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// RepoRoot is the directory holding go.mod.
func RepoRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("go.mod not found above the test's directory")
		}
		dir = parent
	}
}

// Fixtures is the shared fixtures directory (../shared/fixtures beside the
// repository, or $COCOON_FIXTURES). The fixtures are part of every checkout
// CI makes, so a missing directory fails the test rather than skipping it.
func Fixtures(t testing.TB) string {
	t.Helper()
	dir := os.Getenv("COCOON_FIXTURES")
	if dir == "" {
		dir = filepath.Join(RepoRoot(t), "..", "shared", "fixtures")
	}
	if _, err := os.Stat(dir); err != nil {
		t.Fatalf("shared fixtures not found (set COCOON_FIXTURES): %v", err)
	}
	return dir
}

// TrusteeVerifierData reads a file of Trustee's verifier test data in the
// shared fixtures (trustee/deps/verifier/test_data).
func TrusteeVerifierData(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(Fixtures(t), "trustee/deps/verifier/test_data", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Bench runs f once, which must succeed (it warms caches), then as a
// benchmark's loop with allocations reported.
func Bench(b *testing.B, f func() error) {
	b.Helper()
	if err := f(); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if err := f(); err != nil {
			b.Fatal(err)
		}
	}
}

// ModuleDir is the module cache directory of a dependency, for tests that
// read the real evidence some modules ship in their testdata.
func ModuleDir(t testing.TB, module string) string {
	t.Helper()
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", module).Output()
	if err != nil {
		t.Fatalf("go list -m %s: %v", module, err)
	}
	dir := strings.TrimSpace(string(out))
	if dir == "" {
		t.Fatalf("module %s is not in the module cache (run go mod download)", module)
	}
	return dir
}

// WriteFile writes b to path, creating its directories.
func WriteFile(t testing.TB, path string, b []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}
