// Package spiffe keeps the pod's SPIFFE identity inside the guest: a key
// made here, certified by the KBS as the X.509-SVID of the ID the pod's
// initdata names, renewed before it expires, JWT-SVIDs on demand, and the
// trust bundle. Source is the Go API (it implements go-spiffe's
// x509svid.Source, x509bundle.Source and jwtbundle.Source, so an in-guest
// proxy builds its mTLS configuration with go-spiffe's tlsconfig); Server
// serves the same over the SPIFFE Workload API for the pod's containers.
package spiffe

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/cocoon-cc/cocoon/protocol"
)

// Issuer certifies SVIDs: the KBS client (kbs/client.Client).
type Issuer interface {
	X509SVID(ctx context.Context, csr []byte) (*protocol.X509SVIDResponse, error)
	JWTSVID(ctx context.Context, audience []string) (*protocol.JWTSVIDResponse, error)
}

// Errors of a Source.
var (
	// ErrNotReady: no SVID yet (the first request to the KBS has not
	// succeeded).
	ErrNotReady = errors.New("spiffe: no SVID yet")
	// ErrBadSVID: the KBS answered with an SVID that does not verify
	// under its own bundle or does not certify the key sent.
	ErrBadSVID = errors.New("spiffe: bad SVID from the KBS")
	// ErrNoTrustDomain: a bundle of a trust domain the source has none of.
	ErrNoTrustDomain = errors.New("spiffe: no bundle for trust domain")
)

// Retry bounds of a failed renewal.
const (
	minRetry = time.Second
	maxRetry = 30 * time.Second
)

// Source holds the pod's current X.509-SVID and bundle, renewing the SVID
// (with a new key) at half its lifetime.
type Source struct {
	issuer Issuer
	log    *slog.Logger
	now    func() time.Time

	mu      sync.RWMutex
	svid    *x509svid.SVID
	bundle  *spiffebundle.Bundle
	renewAt time.Time
	changed chan struct{} // closed and replaced when the SVID or bundle change
	jwts    map[string]cachedJWT

	ready     chan struct{}
	readyOnce sync.Once
}

// NewSource returns a Source getting SVIDs from issuer; Run fetches them.
func NewSource(issuer Issuer, log *slog.Logger) *Source {
	return &Source{issuer: issuer, log: log, now: time.Now, changed: make(chan struct{}),
		jwts: map[string]cachedJWT{}, ready: make(chan struct{})}
}

// Run fetches the first X.509-SVID and renews it until ctx ends; a failed
// request is retried with backoff (the current SVID stays in use).
func (s *Source) Run(ctx context.Context) error {
	retry := minRetry
	for {
		wait := retry
		if err := s.Renew(ctx); err != nil {
			s.log.Warn("X.509-SVID request failed", "err", err, "retry_in", retry)
			retry = min(2*retry, maxRetry)
		} else {
			retry = minRetry
			s.mu.RLock()
			wait = s.renewAt.Sub(s.now())
			s.mu.RUnlock()
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
	}
}

// Renew gets a new X.509-SVID for a new key now.
func (s *Source) Renew(ctx context.Context) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		return err
	}
	resp, err := s.issuer.X509SVID(ctx, csr)
	if err != nil {
		return err
	}
	svid, bundle, err := parseX509Response(resp, key)
	if err != nil {
		return err
	}
	leaf := svid.Certificates[0]
	s.mu.Lock()
	s.svid, s.bundle = svid, bundle
	s.renewAt = leaf.NotBefore.Add(leaf.NotAfter.Sub(leaf.NotBefore) / 2)
	close(s.changed)
	s.changed = make(chan struct{})
	s.mu.Unlock()
	s.readyOnce.Do(func() { close(s.ready) })
	s.log.Info("X.509-SVID renewed", "spiffe_id", svid.ID.String(), "expires", leaf.NotAfter.UTC().Format(time.RFC3339))
	return nil
}

// parseX509Response checks that the SVID certifies key and verifies under
// the bundle that came with it.
func parseX509Response(resp *protocol.X509SVIDResponse, key *ecdsa.PrivateKey) (*x509svid.SVID, *spiffebundle.Bundle, error) {
	id, err := spiffeid.FromString(resp.SPIFFEID)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %v", ErrBadSVID, err)
	}
	bundle, err := spiffebundle.Parse(id.TrustDomain(), resp.Bundle)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: bundle: %v", ErrBadSVID, err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	svid, err := x509svid.ParseRaw(slices.Concat(resp.CertChain...), keyDER)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %v", ErrBadSVID, err)
	}
	got, _, err := x509svid.Verify(svid.Certificates, bundle)
	if err != nil || got != id {
		return nil, nil, fmt.Errorf("%w: %s does not verify as %s under its bundle: %v", ErrBadSVID, got, id, err)
	}
	return svid, bundle, nil
}

// Ready is closed once the first SVID is there.
func (s *Source) Ready() <-chan struct{} { return s.ready }

// Updated is closed at the next change of the SVID or bundle.
func (s *Source) Updated() <-chan struct{} {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.changed
}

// GetX509SVID is the current X.509-SVID (x509svid.Source).
func (s *Source) GetX509SVID() (*x509svid.SVID, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.svid == nil {
		return nil, ErrNotReady
	}
	return s.svid, nil
}

// Bundle is the trust domain's bundle.
func (s *Source) Bundle() (*spiffebundle.Bundle, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.bundle == nil {
		return nil, ErrNotReady
	}
	return s.bundle, nil
}

func (s *Source) bundleFor(td spiffeid.TrustDomain) (*spiffebundle.Bundle, error) {
	b, err := s.Bundle()
	if err != nil {
		return nil, err
	}
	if b.TrustDomain() != td {
		return nil, fmt.Errorf("%w %s", ErrNoTrustDomain, td)
	}
	return b, nil
}

// GetX509BundleForTrustDomain is x509bundle.Source.
func (s *Source) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	b, err := s.bundleFor(td)
	if err != nil {
		return nil, err
	}
	return b.X509Bundle(), nil
}

// GetJWTBundleForTrustDomain is jwtbundle.Source.
func (s *Source) GetJWTBundleForTrustDomain(td spiffeid.TrustDomain) (*jwtbundle.Bundle, error) {
	b, err := s.bundleFor(td)
	if err != nil {
		return nil, err
	}
	return b.JWTBundle(), nil
}

// FetchJWTSVID returns a JWT-SVID for audience (the first is the primary
// audience), reused until half its lifetime has passed.
func (s *Source) FetchJWTSVID(ctx context.Context, audience []string) (*jwtsvid.SVID, error) {
	key := strings.Join(audience, "\x00")
	s.mu.RLock()
	cached, ok := s.jwts[key]
	s.mu.RUnlock()
	now := s.now()
	if ok && now.Before(cached.renewAt) {
		return cached.svid, nil
	}
	resp, err := s.issuer.JWTSVID(ctx, audience)
	if err != nil {
		return nil, err
	}
	td, err := s.trustDomain()
	if err != nil {
		return nil, err
	}
	svid, err := jwtsvid.ParseAndValidate(resp.Token, s, audience[:1])
	if err != nil || svid.ID.TrustDomain() != td {
		return nil, fmt.Errorf("%w: JWT-SVID: %v", ErrBadSVID, err)
	}
	s.mu.Lock()
	// Expired entries go when another audience is fetched; a pod asks for
	// few audiences.
	for k, v := range s.jwts {
		if !now.Before(v.svid.Expiry) {
			delete(s.jwts, k)
		}
	}
	s.jwts[key] = cachedJWT{svid: svid, renewAt: now.Add(svid.Expiry.Sub(now) / 2)}
	s.mu.Unlock()
	return svid, nil
}

type cachedJWT struct {
	svid    *jwtsvid.SVID
	renewAt time.Time
}

func (s *Source) trustDomain() (spiffeid.TrustDomain, error) {
	b, err := s.Bundle()
	if err != nil {
		return spiffeid.TrustDomain{}, err
	}
	return b.TrustDomain(), nil
}
