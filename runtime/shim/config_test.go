package shim

import (
	"bytes"
	"compress/gzip"
	"encoding/base64"
	"errors"
	"testing"
	"time"
)

const doc = "version = \"0.1.0\"\nalgorithm = \"sha384\"\n[data]\n\"policy.rego\" = \"package agent_policy\"\n"

func gzipped(s string) []byte {
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	zw.Write([]byte(s))
	zw.Close()
	return b.Bytes()
}

func TestDecodeInitdata(t *testing.T) {
	for name, v := range map[string]string{
		"gzip":  base64.StdEncoding.EncodeToString(gzipped(doc)),
		"plain": base64.StdEncoding.EncodeToString([]byte(doc)),
	} {
		got, err := DecodeInitdata(v)
		if err != nil || string(got) != doc {
			t.Errorf("%s: %q %v", name, got, err)
		}
	}
	if got, err := DecodeInitdata(""); got != nil || err != nil {
		t.Errorf("empty: %q %v", got, err)
	}
	for name, v := range map[string]string{
		"not base64":   "!!",
		"bad gzip":     base64.StdEncoding.EncodeToString([]byte{0x1f, 0x8b, 0, 0}),
		"not initdata": base64.StdEncoding.EncodeToString([]byte("version = \"9\"")),
		"bomb":         base64.StdEncoding.EncodeToString(gzipped(doc + string(bytes.Repeat([]byte("#"), 1<<20)))),
	} {
		if _, err := DecodeInitdata(v); !errors.Is(err, ErrConfig) {
			t.Errorf("%s: %v, want ErrConfig", name, err)
		}
	}
}

func TestParseConfig(t *testing.T) {
	c, err := ParseConfig([]byte("[sandbox]\nbackend = \"qemu\"\nstart_timeout = \"90s\"\n[qemu]\nkernel = \"/k\"\n"))
	if err != nil || c.Sandbox.Backend != "qemu" || c.Sandbox.StartTimeout.Duration != 90*time.Second {
		t.Fatalf("%+v %v", c, err)
	}
	var q struct{ Kernel string }
	if err := c.Decode("qemu", &q); err != nil || q.Kernel != "/k" {
		t.Fatalf("decode [qemu]: %+v %v", q, err)
	}
	if d, err := ParseConfig(nil); err != nil || d.Sandbox.Backend != "local" || d.Sandbox.StartTimeout.Duration != time.Minute ||
		d.Sandbox.EmptyDirMode != EmptyDirBlockEncrypted || d.Sandbox.EmptyDirSizeMiB != defaultEmptyDirMiB {
		t.Fatalf("defaults: %+v %v", d, err)
	}
	for _, bad := range []string{"[sandbox", "[sandbox]\nstart_timeout = \"soon\"", "[sandbox]\nemptydir_mode = \"shared-fs\"",
		"[sandbox]\nemptydir_size_mib = -1"} {
		if _, err := ParseConfig([]byte(bad)); !errors.Is(err, ErrConfig) {
			t.Errorf("%q: %v", bad, err)
		}
	}
}

// FuzzDecodeInitdata: any annotation value decodes to a valid document or
// fails with ErrConfig.
func FuzzDecodeInitdata(f *testing.F) {
	f.Add(base64.StdEncoding.EncodeToString(gzipped(doc)))
	f.Add("e30=")
	f.Fuzz(func(t *testing.T, v string) {
		if _, err := DecodeInitdata(v); err != nil && !errors.Is(err, ErrConfig) {
			t.Fatalf("error %v", err)
		}
	})
}
