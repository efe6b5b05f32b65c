package snp

import (
	"context"
	"encoding/hex"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cocoon-cc/cocoon/attestation/verifier"
)

// fakeKDS serves the real VCEKs of the samples at the paths AMD's KDS uses.
type fakeKDS struct {
	*httptest.Server
	requests atomic.Int32
	mu       sync.Mutex
	urls     []string
	// status, when set, answers instead of serving certificates.
	status func(n int32, w http.ResponseWriter) bool
}

func newFakeKDS(t *testing.T) *fakeKDS {
	certs := map[string][]byte{}
	for _, s := range samples(t) {
		r, err := ParseReport(s.raw)
		if err != nil {
			t.Fatal(err)
		}
		if len(s.certs.VCEK) != 0 {
			p, err := issuerOf(s.certs.VCEK)
			if err != nil {
				t.Fatal(err)
			}
			certs["/vcek/v1/"+p.String()+"/"+hex.EncodeToString(r.Proto().ChipId)] = s.certs.VCEK
		}
	}
	k := &fakeKDS{}
	k.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		n := k.requests.Add(1)
		k.mu.Lock()
		k.urls = append(k.urls, req.URL.String())
		k.mu.Unlock()
		if k.status != nil && k.status(n, w) {
			return
		}
		der, ok := certs[req.URL.Path]
		if !ok {
			http.NotFound(w, req)
			return
		}
		w.Write(der)
	}))
	t.Cleanup(k.Close)
	return k
}

func issuerOf(der []byte) (Product, error) {
	e, err := parseEndorsement(der, 0)
	if err != nil {
		return ProductUnknown, err
	}
	return e.product, nil
}

func (k *fakeKDS) options() Options {
	return Options{KDSURL: k.URL, HTTPClient: k.Client(), KDSBackoff: time.Millisecond, KDSMaxBackoff: 20 * time.Millisecond}
}

func TestKDSFetchAndCache(t *testing.T) {
	k := newFakeKDS(t)
	ev := setCertChain(t, trusteeEvidence(t), "null")
	cacheDir := t.TempDir()
	o := k.options()
	o.CacheDir = cacheDir
	v := newVerifier(t, o)
	for range 3 {
		if _, err := v.Evaluate(ctx, ev, verifier.Expected{}); err != nil {
			t.Fatal(err)
		}
	}
	if n := k.requests.Load(); n != 1 {
		t.Errorf("%d KDS requests for one VCEK", n)
	}
	hwid := hex.EncodeToString(jsonField(t, "chip_id"))
	if want := "/vcek/v1/Genoa/" + hwid + "?blSPL=10&teeSPL=00&snpSPL=23&ucodeSPL=25"; k.urls[0] != want {
		t.Errorf("URL %s, want %s", k.urls[0], want)
	}
	// The disk cache is Trustee's offline store layout: a restarted
	// verifier, and a verifier using it as CertDir, need no KDS.
	if _, err := os.Stat(filepath.Join(cacheDir, "vcek", hwid, "bl10_tee00_snp23_ucode25_vcek.der")); err != nil {
		t.Fatal(err)
	}
	if _, err := newVerifier(t, o).Evaluate(ctx, ev, verifier.Expected{}); err != nil {
		t.Fatal(err)
	}
	if _, err := newVerifier(t, Options{DisableKDS: true, CertDir: cacheDir}).Evaluate(ctx, ev, verifier.Expected{}); err != nil {
		t.Fatal(err)
	}
	if n := k.requests.Load(); n != 1 {
		t.Errorf("%d KDS requests after restart", n)
	}
}

// Version 2 reports carry no CPUID: the product must be configured.
func TestKDSVersion2(t *testing.T) {
	k := newFakeKDS(t)
	for _, s := range []sample{samples(t)[1], samples(t)[3]} {
		_, err := newVerifier(t, k.options()).VerifyReport(ctx, s.raw, CertChain{}, verifier.Expected{})
		if !errors.Is(err, ErrUnknownProduct) {
			t.Errorf("%s without a product: %v", s.name, err)
		}
		o := k.options()
		o.Product = Milan
		if _, err := newVerifier(t, o).VerifyReport(ctx, s.raw, CertChain{}, verifier.Expected{}); err != nil {
			t.Errorf("%s: %v", s.name, err)
		}
	}
	if n := k.requests.Load(); n != 2 {
		t.Errorf("%d requests, want 2", n)
	}
}

func TestKDSRateLimited(t *testing.T) {
	k := newFakeKDS(t)
	k.status = func(_ int32, w http.ResponseWriter) bool {
		w.Header().Set("Retry-After", "0")
		w.WriteHeader(http.StatusTooManyRequests)
		return true
	}
	ev := setCertChain(t, trusteeEvidence(t), "null")
	o := k.options()
	o.KDSAttempts = 4
	_, err := newVerifier(t, o).Evaluate(ctx, ev, verifier.Expected{})
	var limited *RateLimitedError
	if !errors.As(err, &limited) || !errors.Is(err, ErrKDSRateLimited) || !errors.Is(err, ErrKDS) || !errors.Is(err, verifier.ErrEndorsement) {
		t.Fatalf("%v", err)
	}
	if n := k.requests.Load(); n != 4 {
		t.Errorf("%d requests, want 4", n)
	}

	// A server asking for more than KDSMaxBackoff is not waited for.
	k.requests.Store(0)
	k.status = func(_ int32, w http.ResponseWriter) bool {
		w.Header().Set("Retry-After", "3600")
		w.WriteHeader(http.StatusTooManyRequests)
		return true
	}
	_, err = newVerifier(t, o).Evaluate(ctx, ev, verifier.Expected{})
	if !errors.As(err, &limited) || limited.RetryAfter != time.Hour || k.requests.Load() != 1 {
		t.Errorf("%v after %d requests", err, k.requests.Load())
	}
}

func TestKDSRetriesTransientErrors(t *testing.T) {
	k := newFakeKDS(t)
	k.status = func(n int32, w http.ResponseWriter) bool {
		if n <= 2 {
			w.WriteHeader(http.StatusServiceUnavailable)
			return true
		}
		return false
	}
	o := k.options()
	o.KDSBackoff = 10 * time.Millisecond
	start := time.Now()
	if _, err := newVerifier(t, o).Evaluate(ctx, setCertChain(t, trusteeEvidence(t), "null"), verifier.Expected{}); err != nil {
		t.Fatal(err)
	}
	// Two waits, the second twice the first.
	if n, d := k.requests.Load(), time.Since(start); n != 3 || d < 30*time.Millisecond {
		t.Errorf("%d requests in %v", n, d)
	}
}

func TestKDSPermanentErrors(t *testing.T) {
	ev := setCertChain(t, trusteeEvidence(t), "null")
	for name, handler := range map[string]func(int32, http.ResponseWriter) bool{
		"not found": func(_ int32, w http.ResponseWriter) bool { w.WriteHeader(http.StatusNotFound); return true },
		"garbage":   func(_ int32, w http.ResponseWriter) bool { w.Write([]byte("<html>busy</html>")); return true },
	} {
		k := newFakeKDS(t)
		k.status = handler
		v := newVerifier(t, k.options())
		for range 2 {
			_, err := v.Evaluate(ctx, ev, verifier.Expected{})
			if !errors.Is(err, ErrKDS) || errors.Is(err, ErrKDSRateLimited) {
				t.Errorf("%s: %v", name, err)
			}
		}
		// Not retried, and nothing bad was cached.
		if n := k.requests.Load(); n != 2 {
			t.Errorf("%s: %d requests, want 2", name, n)
		}
	}
}

func TestKDSContextCanceled(t *testing.T) {
	k := newFakeKDS(t)
	k.status = func(_ int32, w http.ResponseWriter) bool { w.WriteHeader(http.StatusBadGateway); return true }
	o := k.options()
	o.KDSBackoff, o.KDSMaxBackoff, o.KDSAttempts = time.Minute, time.Minute, 10
	c, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := newVerifier(t, o).Evaluate(c, setCertChain(t, trusteeEvidence(t), "null"), verifier.Expected{})
	if !errors.Is(err, ErrKDS) || time.Since(start) > 5*time.Second {
		t.Errorf("%v after %v", err, time.Since(start))
	}
}

// Concurrent attestations of a new chip make one KDS request.
func TestKDSMergesConcurrentRequests(t *testing.T) {
	k := newFakeKDS(t)
	release := make(chan struct{})
	k.status = func(int32, http.ResponseWriter) bool { <-release; return false }
	v := newVerifier(t, k.options())
	ev := setCertChain(t, trusteeEvidence(t), "null")
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := v.Evaluate(ctx, ev, verifier.Expected{})
			errs <- err
		}()
	}
	time.Sleep(200 * time.Millisecond)
	close(release)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	if n := k.requests.Load(); n != 1 {
		t.Errorf("%d requests, want 1", n)
	}
}

func TestKDSMaskedChipID(t *testing.T) {
	k := newFakeKDS(t)
	ev := setCertChain(t, trusteeEvidence(t), "null")
	ev = setJSONField(t, ev, "chip_id", "["+zeros(63)+"0]")
	_, err := newVerifier(t, k.options()).Evaluate(ctx, ev, verifier.Expected{})
	if !errors.Is(err, ErrNoEndorsementKey) || k.requests.Load() != 0 {
		t.Errorf("%v", err)
	}
}

func zeros(n int) string {
	b := make([]byte, 0, 2*n)
	for range n {
		b = append(b, '0', ',')
	}
	return string(b)
}

func TestRetryAfter(t *testing.T) {
	now := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	for h, want := range map[string]time.Duration{
		"120":                           2 * time.Minute,
		"Mon, 23 Nov 2026 12:00:30 GMT": 30 * time.Second,
		"Mon, 23 Nov 2026 11:00:00 GMT": 0,
		"":                              0,
		"-5":                            0,
		"soon":                          0,
	} {
		if got := retryAfter(h, now); got != want {
			t.Errorf("%q: %v, want %v", h, got, want)
		}
	}
}
