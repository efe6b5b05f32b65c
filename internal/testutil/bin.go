package testutil

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

// Bin returns the path of a Cocoon binary: from $COCOON_BIN (make test
// builds them first), else built once per test process into a temporary
// directory.
func Bin(t testing.TB, name string) string {
	t.Helper()
	if d := os.Getenv("COCOON_BIN"); d != "" {
		return filepath.Join(d, name)
	}
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "cocoon-bin-")
		if buildErr != nil {
			return
		}
		cmd := exec.Command("go", "build", "-o", binDir+"/", "./cmd/...")
		cmd.Dir = RepoRoot(t)
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return filepath.Join(binDir, name)
}

// ToolDir is where a tool the tests run, built from the Go module proxy
// by a scripts/build-*.sh, is cached outside the repository: $env when
// set, else ${XDG_CACHE_HOME:-/var/cache}/cocoon/<name>/<key> (the
// scripts' default).
func ToolDir(env, name, key string) string {
	if d := os.Getenv(env); d != "" {
		return d
	}
	cache := os.Getenv("XDG_CACHE_HOME")
	if cache == "" {
		cache = "/var/cache"
	}
	return filepath.Join(cache, "cocoon", name, key)
}
