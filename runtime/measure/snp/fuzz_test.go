package snp

import (
	"errors"
	"testing"

	"github.com/cocoon-cc/cocoon/runtime/measure/ovmf"
	"github.com/cocoon-cc/cocoon/runtime/measure/ovmf/ovmftest"
)

// FuzzLaunchDigest measures a kernel through firmware images whose tail
// (footer table, SEV metadata, hash table location) the fuzzer mutates:
// every image gives a digest or one of the documented errors.
func FuzzLaunchDigest(f *testing.F) {
	b := ovmftest.AmdSev()
	f.Add(b[len(b)-0x600:])
	f.Fuzz(func(t *testing.T, tail []byte) {
		img := make([]byte, (len(tail)+ovmf.PageSize-1)/ovmf.PageSize*ovmf.PageSize)
		copy(img[len(img)-len(tail):], tail)
		_, err := LaunchDigest(Options{OVMF: img, Hashes: &Hashes{}, VCPUs: 2, VCPUType: "EPYC-v4"})
		if err != nil && !errors.Is(err, ovmf.ErrInvalid) && !errors.Is(err, ErrNotSNPFirmware) &&
			!errors.Is(err, ErrNoKernelHashes) {
			t.Fatalf("unexpected error %v", err)
		}
	})
}
