package detect

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/cocoon-cc/cocoon/protocol"
)

func touch(t *testing.T, root, path, data string) {
	p := filepath.Join(root, path)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestDetect(t *testing.T) {
	for _, c := range []struct {
		name  string
		files map[string]string
		want  protocol.Tee
	}{
		{"nothing", nil, protocol.TeeSample},
		{"ccel", map[string]string{"/sys/firmware/acpi/tables/CCEL": ""}, protocol.TeeTDX},
		{"tdx provider", map[string]string{"/sys/kernel/config/tsm/report/e/provider": "tdx_guest\n"}, protocol.TeeTDX},
		{"sev-guest", map[string]string{"/dev/sev-guest": ""}, protocol.TeeSNP},
		{"sev provider", map[string]string{"/sys/kernel/config/tsm/report/e/provider": "sev_guest\n"}, protocol.TeeSNP},
		{"cca provider", map[string]string{"/sys/kernel/config/tsm/report/e/provider": "arm_cca_guest\n"}, protocol.TeeCCA},
		{"tpm", map[string]string{"/dev/tpmrm0": ""}, protocol.TeeTPM},
		{"tdx before tpm", map[string]string{"/dev/tpmrm0": "", "/dev/tdx_guest": ""}, protocol.TeeTDX},
	} {
		root := t.TempDir()
		for p, d := range c.files {
			touch(t, root, p, d)
		}
		if got := Detect(Options{Root: root}); got != c.want {
			t.Errorf("%s: Detect = %s, want %s", c.name, got, c.want)
		}
	}
}

func TestOpenOverride(t *testing.T) {
	root := t.TempDir()
	touch(t, root, "/dev/sev-guest", "")
	for tee, want := range map[string]protocol.Tee{"": protocol.TeeSNP, "auto": protocol.TeeSNP,
		"sample": protocol.TeeSample, "tdx": protocol.TeeTDX, "cca": protocol.TeeCCA} {
		a, closeFn, err := Open(context.Background(), Options{Tee: tee, Root: root})
		if err != nil || a.Tee() != want {
			t.Fatalf("Open(%q) = %v, %v; want %s", tee, a, err, want)
		}
		closeFn()
	}
	for _, bad := range []string{"sgx", "TDX", "bogus"} {
		if _, _, err := Open(context.Background(), Options{Tee: bad, Root: root}); !errors.Is(err, ErrUnknownTee) {
			t.Errorf("Open(%q): %v, want ErrUnknownTee", bad, err)
		}
	}
}
