package nvidia

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"time"

	"golang.org/x/crypto/ocsp"

	"github.com/cocoon-cc/cocoon/attestation/verifier"
)

// NVIDIAOCSP is NVIDIA's OCSP responder for device certificates.
const NVIDIAOCSP = "https://ocsp.ndis.nvidia.com/"

// maxOCSPResponse bounds a responder's answer.
const maxOCSPResponse = 64 << 10

// revocation asks an OCSP responder about the chain's certificates, from
// the device identity up to (not including) the root. The attestation key's
// certificate is skipped, as nvtrust skips it: the GPU makes it at boot
// and no responder knows it. Good answers are cached until their
// NextUpdate.
type revocation struct {
	url  string
	http *http.Client
	good *verifier.Cache[[32]byte, time.Time] // certificate and issuer digest -> NextUpdate
}

func (r *revocation) check(ctx context.Context, certs []*x509.Certificate, now time.Time) error {
	for i := 1; i < len(certs)-1; i++ {
		if err := r.checkOne(ctx, certs[i], certs[i+1], now); err != nil {
			return err
		}
	}
	return nil
}

func (r *revocation) checkOne(ctx context.Context, cert, issuer *x509.Certificate, now time.Time) error {
	key := sha256.Sum256(append(append([]byte{}, cert.Raw...), issuer.Raw...))
	if next, ok := r.good.Get(key); ok && now.Before(next) {
		return nil
	}
	req, err := ocsp.CreateRequest(cert, issuer, &ocsp.RequestOptions{})
	if err != nil {
		return fmt.Errorf("%w: %s: %v", ErrRevocationUnknown, cert.Subject, err)
	}
	body, err := r.post(ctx, req)
	if err != nil {
		return fmt.Errorf("%w: %s: %v", ErrRevocationUnknown, cert.Subject, err)
	}
	// The answer must be signed by the issuer or a responder it delegated.
	resp, err := ocsp.ParseResponseForCert(body, cert, issuer)
	if err != nil {
		return fmt.Errorf("%w: %s: %v", ErrRevocationUnknown, cert.Subject, err)
	}
	next := resp.NextUpdate
	if next.IsZero() {
		next = resp.ThisUpdate.Add(time.Hour)
	}
	switch {
	case resp.Status == ocsp.Revoked:
		return fmt.Errorf("%w: %s, serial %x, at %s", ErrRevoked, cert.Subject, cert.SerialNumber, resp.RevokedAt.Format(time.RFC3339))
	case resp.Status != ocsp.Good:
		return fmt.Errorf("%w: %s: status unknown to the responder", ErrRevocationUnknown, cert.Subject)
	case now.Before(resp.ThisUpdate.Add(-5*time.Minute)) || !now.Before(next):
		return fmt.Errorf("%w: %s: answer not current (%s to %s)", ErrRevocationUnknown, cert.Subject,
			resp.ThisUpdate.Format(time.RFC3339), next.Format(time.RFC3339))
	}
	r.good.Put(key, next)
	return nil
}

func (r *revocation) post(ctx context.Context, req []byte) ([]byte, error) {
	hr, err := http.NewRequestWithContext(ctx, http.MethodPost, r.url, bytes.NewReader(req))
	if err != nil {
		return nil, err
	}
	hr.Header.Set("Content-Type", "application/ocsp-request")
	resp, err := r.http.Do(hr)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("responder answered %s", resp.Status)
	}
	return io.ReadAll(io.LimitReader(resp.Body, maxOCSPResponse))
}
