package snp

import (
	"crypto/sha512"
	"os"
	"path/filepath"
	"testing"

	"github.com/cocoon-cc/cocoon/runtime/measure/ovmf"
)

// BenchmarkLaunchDigest measures the digest of Debian's 2 MiB OVMF with 4
// vCPUs against a floor in the same run: SHA-384 over the image's pages,
// which any implementation must do. Report the ratio of the two.
func BenchmarkLaunchDigest(b *testing.B) {
	dir, _, _ := debianInputs(b)
	image, err := os.ReadFile(filepath.Join(dir, "OVMF_CODE.fd"))
	if err != nil {
		b.Fatal(err)
	}
	b.Run("LaunchDigest", func(b *testing.B) {
		b.SetBytes(int64(len(image)))
		for b.Loop() {
			if _, err := LaunchDigest(Options{OVMF: image, VCPUs: 4, VCPUType: "EPYC-Milan"}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("Floor", func(b *testing.B) {
		b.SetBytes(int64(len(image)))
		for b.Loop() {
			for off := 0; off < len(image); off += ovmf.PageSize {
				sha512.Sum384(image[off : off+ovmf.PageSize])
			}
		}
	})
}
