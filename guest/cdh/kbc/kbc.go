// Package kbc is the CDH's key broker client: it fetches resources named
// by resource URIs from the configured KBS through the RCAR client,
// attesting once and reusing the token, and turns failures into typed
// errors.
package kbc

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"time"

	"github.com/cocoon-cc/cocoon/guest/attester"
	"github.com/cocoon-cc/cocoon/guest/cdh/resource"
	"github.com/cocoon-cc/cocoon/kbs/client"
	"github.com/cocoon-cc/cocoon/protocol"
)

var (
	// ErrUnavailable: the KBS could not be reached or did not answer in time.
	ErrUnavailable = errors.New("kbs unavailable")
	// ErrDenied: the KBS refused to release the resource (attestation
	// failed or the resource policy denied it).
	ErrDenied = errors.New("kbs denied the resource")
	// ErrNotFound: the KBS has no such resource.
	ErrNotFound = errors.New("kbs resource not found")
	// ErrKBS: any other KBS or protocol failure.
	ErrKBS = errors.New("kbs error")
)

// Config locates the KBS.
type Config struct {
	URL string
	// CertPEM is the KBS's HTTPS root certificate (PEM text, as cdh.toml's
	// kbs_cert holds it); empty for the system roots or plain HTTP.
	CertPEM string
	// Timeout bounds one GetResource call (attestation included) when the
	// caller's context has no deadline; 60 s if zero.
	Timeout time.Duration
	// InitData is the initdata TOML the guest was launched with, if any.
	InitData []byte
}

// KBC fetches resources; safe for concurrent use.
type KBC struct {
	c       *client.Client
	timeout time.Duration
}

// New returns a KBC attesting with a.
func New(cfg Config, a attester.Attester) (*KBC, error) {
	hc, err := httpClient(cfg.CertPEM)
	if err != nil {
		return nil, err
	}
	c, err := client.New(cfg.URL, a, client.Options{HTTP: hc, InitData: cfg.InitData})
	if err != nil {
		return nil, err
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 60 * time.Second
	}
	return &KBC{c: c, timeout: cfg.Timeout}, nil
}

// Client is the RCAR client underneath, for the KBS's other plugins
// (SPIFFE SVIDs) to share the attestation.
func (k *KBC) Client() *client.Client { return k.c }

func httpClient(certPEM string) (*http.Client, error) {
	jar, _ := cookiejar.New(nil)
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if certPEM != "" {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM([]byte(certPEM)) {
			return nil, fmt.Errorf("%w: kbs_cert holds no PEM certificate", ErrKBS)
		}
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	return &http.Client{Jar: jar, Transport: tr}, nil
}

// retries is how often a call that could not reach the KBS is retried.
var retries = []time.Duration{100 * time.Millisecond, 400 * time.Millisecond, 1600 * time.Millisecond}

// GetResource returns the resource u names.
func (k *KBC) GetResource(ctx context.Context, u resource.URI) ([]byte, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, k.timeout)
		defer cancel()
	}
	for i := 0; ; i++ {
		data, err := k.c.GetResource(ctx, u.Path())
		if err == nil {
			return data, nil
		}
		err = classify(u, err)
		if !errors.Is(err, ErrUnavailable) || i == len(retries) || ctx.Err() != nil {
			return nil, err
		}
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(retries[i]):
		}
	}
}

// classify wraps err with the sentinel that says what went wrong.
func classify(u resource.URI, err error) error {
	var kerr *protocol.Error
	if protocol.IsResourceNotFound(err) {
		return fmt.Errorf("%w: %s: %w", ErrNotFound, u, err)
	}
	if errors.As(err, &kerr) {
		switch kerr.Kind {
		case protocol.KindPolicyDeny, protocol.KindAttestation, protocol.KindTokenVerifier, protocol.KindTokenNotFound:
			return fmt.Errorf("%w: %s: %w", ErrDenied, u, err)
		}
		return fmt.Errorf("%w: %s: %w", ErrKBS, u, err)
	}
	var uerr *url.Error
	if errors.Is(err, context.DeadlineExceeded) || errors.As(err, &uerr) {
		return fmt.Errorf("%w: %s: %w", ErrUnavailable, u, err)
	}
	return fmt.Errorf("%w: %s: %w", ErrKBS, u, err)
}
