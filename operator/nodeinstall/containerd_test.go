package nodeinstall

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

const userConfig = `version = 2
root = "/var/lib/containerd-test"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "registry.example/pause:3.9"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
`

// dump is the configuration containerd itself loads from path.
func dump(t *testing.T, path string) string {
	t.Helper()
	if _, err := exec.LookPath("containerd"); err != nil {
		t.Fatal("containerd missing (scripts/install-deps.sh installs it)")
	}
	out, err := exec.Command("containerd", "--config", path, "config", "dump").CombinedOutput()
	if err != nil {
		t.Fatalf("containerd config dump: %v\n%s", err, out)
	}
	return string(out)
}

func testRuntimes(dir string) []Runtime {
	return []Runtime{{Handler: "cocoon-qemu", ShimPath: filepath.Join(dir, "bin/containerd-shim-coco-v2"), ConfigPath: filepath.Join(dir, "etc/qemu.toml")}}
}

// TestContainerdDropIn: containerd (Debian's) loads the user's settings
// and Cocoon's runtime through the drop-in, the user's file gains one
// line, and Remove gives back the same bytes.
func TestContainerdDropIn(t *testing.T) {
	for name, cfg := range map[string]string{
		"no imports":      userConfig,
		"other imports":   "imports = [\"/nonexistent/*.toml\"]\n" + userConfig,
		"imported CRI":    "imports = [\"IMPORTED\"]\n" + strings.Replace(userConfig, "registry.example/pause:3.9", "overridden", 1),
		"trailing commas": "imports = [\"/nonexistent/*.toml\",]\n" + userConfig,
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			imported := filepath.Join(dir, "imported.toml")
			if err := os.WriteFile(imported, []byte(userConfig), 0o600); err != nil {
				t.Fatal(err)
			}
			cfg = strings.Replace(cfg, "IMPORTED", imported, 1)
			path := filepath.Join(dir, "config.toml")
			if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
				t.Fatal(err)
			}
			c := Containerd{ConfigPath: path, DropInDir: filepath.Join(dir, "conf.d")}
			changed, err := c.Install(testRuntimes(dir), "/run/cocoon-snapshotter/s.sock")
			if err != nil || !changed {
				t.Fatalf("Install: %v, changed %v", err, changed)
			}
			got := dump(t, path)
			for _, want := range []string{`runtimes.cocoon-qemu]`, `runtime_type = "` + dir + `/bin/containerd-shim-coco-v2"`,
				`ConfigPath = "` + dir + `/etc/qemu.toml"`,
				`sandbox_image = "registry.example/pause:3.9"`, `runtimes.runc]`, `default_runtime_name = "runc"`,
				`root = "/var/lib/containerd-test"`, `snapshotter = "cocoon"`, `disable_snapshot_annotations = false`,
				`[proxy_plugins.cocoon]`, `address = "/run/cocoon-snapshotter/s.sock"`} {
				if !strings.Contains(got, want) {
					t.Errorf("containerd's configuration lacks %s:\n%s", want, got)
				}
			}
			if changed, err := c.Install(testRuntimes(dir), "/run/cocoon-snapshotter/s.sock"); err != nil || changed {
				t.Errorf("second Install: %v, changed %v (want no change)", err, changed)
			}
			if changed, err := c.Remove(); err != nil || !changed {
				t.Fatalf("Remove: %v, changed %v", err, changed)
			}
			if b, _ := os.ReadFile(path); string(b) != cfg {
				t.Errorf("configuration after Remove:\n%s\nwant:\n%s", b, cfg)
			}
			if _, err := os.Stat(c.DropInDir); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("drop-in directory left: %v", err)
			}
			if got := dump(t, path); strings.Contains(got, "cocoon-qemu") || strings.Contains(got, "proxy_plugins.cocoon") {
				t.Errorf("containerd still has Cocoon's runtime or snapshotter:\n%s", got)
			}
		})
	}
}

// TestContainerdRefused: configurations the installer cannot extend
// without rewriting them are refused with the file unchanged.
func TestContainerdRefused(t *testing.T) {
	for name, cfg := range map[string]string{
		"version 3":        "version = 3\n",
		"no version":       "root = \"/x\"\n",
		"multi-line array": "version = 2\nimports = [\n  \"/a/*.toml\",\n]\n",
		"not TOML":         "version = 2\n[plugins\n",
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "config.toml")
			if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
				t.Fatal(err)
			}
			c := Containerd{ConfigPath: path, DropInDir: filepath.Join(dir, "conf.d")}
			if _, err := c.Install(testRuntimes(dir), ""); !errors.Is(err, ErrContainerdConfig) {
				t.Errorf("Install: %v, want ErrContainerdConfig", err)
			}
			if b, _ := os.ReadFile(path); string(b) != cfg {
				t.Errorf("configuration changed:\n%s", b)
			}
			if _, err := os.Stat(c.DropInDir); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("drop-in directory made: %v", err)
			}
		})
	}
}
