package snp

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
	"os"

	"github.com/cocoon-cc/cocoon/runtime/measure/ovmf"
)

// GUIDs of QEMU's SEV hashes table (OvmfPkg/AmdSev BlobVerifierSevHashes).
var (
	hashTableGUID = ovmf.MustParseGUID("9438d606-4f22-4cc9-b479-a793d411fd21")
	kernelGUID    = ovmf.MustParseGUID("4de79437-abd2-427f-b835-d5b172d2045b")
	initrdGUID    = ovmf.MustParseGUID("44baf731-3a2f-4bd7-9af1-41e29169781d")
	cmdlineGUID   = ovmf.MustParseGUID("97d02dd8-bd20-4c94-aa78-e7714d36ab2a")
)

// Hashes are the SHA-256 digests of what QEMU direct-boots: OVMF checks
// the kernel, initrd and command line it gets from QEMU against them.
// QEMU leaves an SEV guest's kernel setup header unpatched, so the kernel
// digest is that of the file as given.
type Hashes struct {
	Kernel, Initrd, Cmdline [sha256.Size]byte
}

// Sizes of the table: a header (GUID, u16 length) then cmdline, initrd and
// kernel entries (GUID, u16 length, SHA-256), padded to 16 bytes.
const (
	hashEntrySize      = 16 + 2 + sha256.Size
	hashTableSize      = 16 + 2 + 3*hashEntrySize
	paddedHashTableLen = (hashTableSize + 15) &^ 15
)

// CmdlineHash is the digest of a command line as QEMU passes it: with its
// terminating NUL (an empty command line is a lone NUL).
func CmdlineHash(cmdline string) [sha256.Size]byte {
	return sha256.Sum256(append([]byte(cmdline), 0))
}

// FileHash is the SHA-256 of a file, streamed. An empty path stands for an
// absent file, which QEMU hashes as empty.
func FileHash(path string) ([sha256.Size]byte, error) {
	var sum [sha256.Size]byte
	h := sha256.New()
	if path != "" {
		f, err := os.Open(path)
		if err != nil {
			return sum, err
		}
		defer f.Close()
		if _, err := io.Copy(h, f); err != nil {
			return sum, fmt.Errorf("read %s: %w", path, err)
		}
	}
	h.Sum(sum[:0])
	return sum, nil
}

// Table is the padded SEV hashes table exactly as QEMU writes it.
func (h *Hashes) Table() []byte {
	b := make([]byte, paddedHashTableLen)
	copy(b, hashTableGUID[:])
	binary.LittleEndian.PutUint16(b[16:], hashTableSize)
	off := 18
	for _, e := range []struct {
		guid ovmf.GUID
		sum  *[sha256.Size]byte
	}{{cmdlineGUID, &h.Cmdline}, {initrdGUID, &h.Initrd}, {kernelGUID, &h.Kernel}} {
		copy(b[off:], e.guid[:])
		binary.LittleEndian.PutUint16(b[off+16:], hashEntrySize)
		copy(b[off+18:], e.sum[:])
		off += hashEntrySize
	}
	return b
}
