package imagetest

import (
	"os"
	"testing"
)

// BusyboxApplets are the commands BusyboxLayer links to busybox.
var BusyboxApplets = []string{"sh", "cat", "echo", "sleep", "ls", "true", "false", "env", "id", "hostname",
	"touch", "test", "wc", "head", "ps", "kill", "mount"}

// BusyboxLayer is a layer with Debian's static busybox (package
// busybox-static) at /bin/busybox and its common applets as symlinks: a
// tiny image whose containers can run shell commands. It skips the test
// loudly when the package is missing.
func BusyboxLayer(t testing.TB) Layer {
	t.Helper()
	b, err := os.ReadFile("/bin/busybox")
	if err != nil {
		t.Skipf("SKIP: static busybox missing (scripts/install-deps.sh installs busybox-static): %v", err)
	}
	entries := []Entry{Dir("bin/", 0o755), File("bin/busybox", string(b), 0o755), Dir("tmp/", 0o1777),
		Dir("etc/", 0o755), File("etc/passwd", "root:x:0:0:root:/:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n", 0o644),
		File("etc/group", "root:x:0:\nnogroup:x:65534:\n", 0o644)}
	for _, a := range BusyboxApplets {
		entries = append(entries, Symlink("bin/"+a, "busybox"))
	}
	return GzipLayer(t, entries...)
}
