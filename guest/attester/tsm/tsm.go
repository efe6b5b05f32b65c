// Package tsm gets attestation reports through Linux configfs-tsm
// (/sys/kernel/config/tsm/report, kernel >= 6.7), which the SNP and TDX
// guest drivers both serve.
package tsm

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// DefaultRoot is the configfs-tsm report directory.
const DefaultRoot = "/sys/kernel/config/tsm/report"

// Errors of Get.
var (
	// ErrUnavailable reports that configfs-tsm is absent.
	ErrUnavailable = errors.New("tsm: configfs-tsm report interface unavailable")
	// ErrProvider reports a report entry served by another TEE's driver.
	ErrProvider = errors.New("tsm: unexpected report provider")
	// ErrConflict reports that another writer changed the entry's inblob
	// while the report was read: its outblob may not carry our data.
	ErrConflict = errors.New("tsm: report entry written concurrently")
)

// Client creates report entries under Root.
type Client struct {
	// Root is the report directory; DefaultRoot when empty.
	Root string
	// Mkdir creates an entry; os.MkdirTemp when nil. configfs populates
	// an entry's attributes as it is made, which a test double of the
	// kernel does here.
	Mkdir func(dir, pattern string) (string, error)
}

// Request is one report request.
type Request struct {
	// Provider is the driver expected to serve it: "sev_guest", "tdx_guest".
	Provider string
	InBlob   []byte
	// PrivLevel, when set, is written to privlevel (the SNP VMPL).
	PrivLevel *uint
	// AuxBlob asks for auxblob too (the SNP certificate table).
	AuxBlob bool
}

// Response is the report and its auxiliary data.
type Response struct {
	OutBlob []byte
	AuxBlob []byte
}

// Get creates a report entry, writes the request, reads the report and
// removes the entry.
func (c Client) Get(ctx context.Context, req Request) (*Response, error) {
	root := c.Root
	if root == "" {
		root = DefaultRoot
	}
	if fi, err := os.Stat(root); err != nil || !fi.IsDir() {
		return nil, ErrUnavailable
	}
	mkdir := c.Mkdir
	if mkdir == nil {
		mkdir = os.MkdirTemp
	}
	dir, err := mkdir(root, "cocoon-")
	if err != nil {
		return nil, fmt.Errorf("tsm: create entry: %w", err)
	}
	// configfs entries are removed with rmdir, attributes and all.
	defer os.Remove(dir)
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if p, err := readAttr(dir, "provider"); err != nil {
		return nil, err
	} else if strings.TrimSpace(string(p)) != req.Provider {
		return nil, fmt.Errorf("%w: %q, want %q", ErrProvider, strings.TrimSpace(string(p)), req.Provider)
	}
	if req.PrivLevel != nil {
		if err := writeAttr(dir, "privlevel", []byte(strconv.FormatUint(uint64(*req.PrivLevel), 10))); err != nil {
			return nil, err
		}
	}
	if err := writeAttr(dir, "inblob", req.InBlob); err != nil {
		return nil, err
	}
	resp := &Response{}
	if resp.OutBlob, err = readAttr(dir, "outblob"); err != nil {
		return nil, err
	}
	if req.AuxBlob {
		if resp.AuxBlob, err = readAttr(dir, "auxblob"); err != nil {
			return nil, err
		}
	}
	return resp, checkGeneration(dir, req.PrivLevel != nil)
}

// checkGeneration verifies that only our writes reached the entry: the
// kernel counts every write to it in generation.
func checkGeneration(dir string, privLevel bool) error {
	g, err := readAttr(dir, "generation")
	if err != nil {
		return err
	}
	n, err := strconv.ParseUint(strings.TrimSpace(string(g)), 10, 64)
	if err != nil {
		return fmt.Errorf("tsm: generation %q: %w", g, err)
	}
	want := uint64(1)
	if privLevel {
		want = 2
	}
	if n != want {
		return fmt.Errorf("%w: generation %d, want %d", ErrConflict, n, want)
	}
	return nil
}

func readAttr(dir, name string) ([]byte, error) {
	b, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		return nil, fmt.Errorf("tsm: read %s: %w", name, err)
	}
	return b, nil
}

func writeAttr(dir, name string, data []byte) error {
	f, err := os.OpenFile(filepath.Join(dir, name), os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("tsm: write %s: %w", name, err)
	}
	_, err = f.Write(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("tsm: write %s: %w", name, err)
	}
	return nil
}
