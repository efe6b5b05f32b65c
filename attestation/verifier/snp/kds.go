package snp

import (
	"context"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/cocoon-cc/cocoon/attestation/verifier"
)

// DefaultKDSURL is AMD's Key Distribution Service.
const DefaultKDSURL = "https://kdsintf.amd.com"

// maxCertSize bounds a KDS answer; a VCEK is about 1.4 KB.
const maxCertSize = 64 << 10

// Getter sends HTTP requests to the KDS; *http.Client is one.
type Getter interface {
	Do(*http.Request) (*http.Response, error)
}

// kdsClient fetches VCEKs from the KDS, which throttles repeated requests:
// it keeps what it fetched in memory and on disk, merges concurrent
// requests for the same certificate, and backs off exponentially.
type kdsClient struct {
	base       string
	http       Getter
	cacheDir   string
	attempts   int
	backoff    time.Duration
	maxBackoff time.Duration
	mem        *verifier.Cache[string, []byte]
	flight     singleflight.Group
}

// vcek returns the DER VCEK for the chip and TCB of r.
func (k *kdsClient) vcek(ctx context.Context, r *Report, p Product) ([]byte, error) {
	rel := storePath(r)
	if der, ok := k.mem.Get(rel); ok {
		return der, nil
	}
	if k.cacheDir != "" {
		der, err := readFile(filepath.Join(k.cacheDir, rel))
		if err != nil {
			return nil, err
		}
		if der != nil {
			k.mem.Put(rel, der)
			return der, nil
		}
	}
	url := k.vcekURL(r, p)
	v, err, _ := k.flight.Do(url, func() (any, error) { return k.fetch(ctx, url) })
	if err != nil {
		return nil, err
	}
	der := v.([]byte)
	k.mem.Put(rel, der)
	k.store(rel, der)
	return der, nil
}

// vcekURL follows the KDS specification; the zero-padded SPLs are what
// Trustee sends.
func (k *kdsClient) vcekURL(r *Report, p Product) string {
	t := r.ReportedTCB()
	u := fmt.Sprintf("%s/vcek/v1/%s/%s?", k.base, p, hex.EncodeToString(r.kdsHWID()))
	if r.turin() {
		u += fmt.Sprintf("fmcSPL=%02d&", t.FMC)
	}
	return u + fmt.Sprintf("blSPL=%02d&teeSPL=%02d&snpSPL=%02d&ucodeSPL=%02d", t.Bootloader, t.TEE, t.SNP, t.Microcode)
}

// fetch retries network errors, 5xx and 429 with exponential backoff,
// honouring Retry-After when the server asks for no more than maxBackoff.
func (k *kdsClient) fetch(ctx context.Context, url string) ([]byte, error) {
	delay := k.backoff
	for attempt := 1; ; attempt++ {
		der, err := k.get(ctx, url)
		if err == nil {
			return der, nil
		}
		var limited *RateLimitedError
		isLimited := errors.As(err, &limited)
		if attempt >= k.attempts || !isLimited && !errors.Is(err, errTransient) {
			return nil, err
		}
		wait := min(delay, k.maxBackoff)
		if isLimited && limited.RetryAfter > wait {
			if limited.RetryAfter > k.maxBackoff {
				return nil, err
			}
			wait = limited.RetryAfter
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("%w: %v (last error: %v)", ErrKDS, ctx.Err(), err)
		case <-t.C:
		}
		delay *= 2
	}
}

func (k *kdsClient) get(ctx context.Context, url string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrKDS, err)
	}
	resp, err := k.http.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("%w: %v", ErrKDS, err)
		}
		return nil, fmt.Errorf("%w: %w: %v", ErrKDS, errTransient, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxCertSize+1))
	switch {
	case resp.StatusCode == http.StatusTooManyRequests:
		return nil, &RateLimitedError{URL: url, RetryAfter: retryAfter(resp.Header.Get("Retry-After"), time.Now())}
	case resp.StatusCode >= 500:
		return nil, fmt.Errorf("%w: %w: %s: HTTP %d", ErrKDS, errTransient, url, resp.StatusCode)
	case resp.StatusCode != http.StatusOK:
		return nil, fmt.Errorf("%w: %s: HTTP %d", ErrKDS, url, resp.StatusCode)
	case err != nil:
		return nil, fmt.Errorf("%w: %w: %s: %v", ErrKDS, errTransient, url, err)
	case len(body) > maxCertSize:
		return nil, fmt.Errorf("%w: %s: answer over %d bytes", ErrKDS, url, maxCertSize)
	}
	// Refuse garbage before it enters the caches; the chain is checked on use.
	if _, err := x509.ParseCertificate(body); err != nil {
		return nil, fmt.Errorf("%w: %s: not a certificate: %v", ErrKDS, url, err)
	}
	return body, nil
}

// retryAfter reads a Retry-After header: delay seconds or an HTTP date.
func retryAfter(h string, now time.Time) time.Duration {
	if s, err := strconv.Atoi(h); err == nil && s > 0 {
		return time.Duration(s) * time.Second
	}
	if t, err := http.ParseTime(h); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}

// store writes a fetched VCEK into the cache directory, in Trustee's
// offline store layout so the directory can serve as CertDir too. A failure
// only costs a later fetch, so it is not reported.
func (k *kdsClient) store(rel string, der []byte) {
	if k.cacheDir == "" {
		return
	}
	path := filepath.Join(k.cacheDir, rel)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".vcek-*")
	if err != nil {
		return
	}
	_, werr := tmp.Write(der)
	cerr := tmp.Close()
	if werr != nil || cerr != nil || os.Rename(tmp.Name(), path) != nil {
		os.Remove(tmp.Name())
	}
}
