package csv

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/cocoon-cc/cocoon/attestation/verifier"
)

const hskCEKSize = caCertSize + csvCertSize

// hskCEK finds the chip's HSK and CEK: certificate directory, then the
// KDS (memory, cache directory, network).
func (v *Verifier) hskCEK(ctx context.Context, chip string) (hsk, cek []byte, err error) {
	if !validChipID(chip) {
		return nil, nil, fmt.Errorf("%w: serial number %q", ErrEvidenceJSON, chip)
	}
	var b []byte
	if v.opts.CertDir != "" {
		if b, err = readHSKCEK(v.opts.CertDir, chip, true); err != nil {
			return nil, nil, err
		}
	}
	if b == nil && v.kds != nil {
		if b, err = v.kds.get(ctx, chip); err != nil {
			return nil, nil, err
		}
	}
	if b == nil {
		return nil, nil, fmt.Errorf("%w: chip %s (give a certificate directory or allow the KDS)", ErrNoHSKCEK, chip)
	}
	if len(b) != hskCEKSize {
		return nil, nil, fmt.Errorf("%w: HSK/CEK of chip %s has %d bytes, want %d", ErrCertificate, chip, len(b), hskCEKSize)
	}
	return b[:caCertSize], b[caCertSize:], nil
}

// validChipID keeps the serial number to what Hygon's serial numbers are
// made of, since it names a file and a URL query.
func validChipID(s string) bool {
	if s == "" || len(s) > serialSize {
		return false
	}
	for _, c := range []byte(s) {
		if !('0' <= c && c <= '9' || 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z') {
			return false
		}
	}
	return true
}

// readHSKCEK reads dir/hsk_cek/<chip>/hsk_cek.cert, then (when flat)
// dir/hsk_cek.cert. A missing file is no error; nil means none.
func readHSKCEK(dir, chip string, flat bool) ([]byte, error) {
	paths := []string{hskCEKPath(dir, chip)}
	if flat {
		paths = append(paths, filepath.Join(dir, "hsk_cek.cert"))
	}
	for _, p := range paths {
		b, err := os.ReadFile(p)
		switch {
		case err == nil:
			return b, nil
		case !errors.Is(err, fs.ErrNotExist):
			return nil, fmt.Errorf("%w: %v", ErrCertDir, err)
		}
	}
	return nil, nil
}

func hskCEKPath(dir, chip string) string {
	return filepath.Join(dir, "hsk_cek", chip, "hsk_cek.cert")
}

type kdsClient struct {
	base     string
	http     *http.Client
	cacheDir string
	mem      *verifier.Cache[string, []byte]
}

// maxKDSCache bounds the fetched pairs kept in memory (one per chip).
const maxKDSCache = 4096

func newKDSClient(o Options) *kdsClient {
	k := &kdsClient{base: o.KDSURL, http: o.HTTPClient, cacheDir: o.CacheDir, mem: verifier.NewCache[string, []byte](maxKDSCache)}
	if k.base == "" {
		k.base = DefaultKDSURL
	}
	if k.http == nil {
		k.http = &http.Client{Timeout: 30 * time.Second}
	}
	return k
}

// get returns the chip's HSK/CEK pair. Pairs are kept only once their
// size is right; the chain check decides whether they are genuine, and a
// pair that fails it costs nothing but a failed verification.
func (k *kdsClient) get(ctx context.Context, chip string) ([]byte, error) {
	if b, ok := k.mem.Get(chip); ok {
		return b, nil
	}
	if k.cacheDir != "" {
		if b, err := readHSKCEK(k.cacheDir, chip, false); err != nil || b != nil {
			return b, err
		}
	}
	b, err := k.fetch(ctx, chip)
	if err != nil {
		return nil, err
	}
	k.mem.Put(chip, b)
	if k.cacheDir != "" {
		// A cache that cannot be written only costs a fetch next time.
		p := hskCEKPath(k.cacheDir, chip)
		if os.MkdirAll(filepath.Dir(p), 0o755) == nil {
			_ = os.WriteFile(p, b, 0o644)
		}
	}
	return b, nil
}

func (k *kdsClient) fetch(ctx context.Context, chip string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, k.base+chip, nil)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrKDS, err)
	}
	resp, err := k.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrKDS, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%w: %s answered %s", ErrKDS, req.URL.Redacted(), resp.Status)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, hskCEKSize+1))
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrKDS, err)
	}
	if len(b) != hskCEKSize {
		return nil, fmt.Errorf("%w: %d bytes for chip %s, want %d", ErrKDS, len(b), chip, hskCEKSize)
	}
	return b, nil
}
