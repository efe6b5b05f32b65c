package svid

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"errors"
	"fmt"
	"math/big"
	"net/url"
	"time"

	gojose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// ErrCA is returned for a CA key or certificate that cannot be used.
var ErrCA = errors.New("spiffe CA")

// Options shape issued SVIDs.
type Options struct {
	X509TTL time.Duration // X.509-SVID lifetime
	JWTTTL  time.Duration // JWT-SVID lifetime
	// RefreshHint is the bundle's spiffe_refresh_hint.
	RefreshHint time.Duration
	Now         func() time.Time
}

// CA issues the SVIDs of one trust domain.
type CA struct {
	td     spiffeid.TrustDomain
	key    crypto.Signer
	chain  []*x509.Certificate // chain[0] signs SVIDs; the last is the bundle's root
	kid    string
	jwt    gojose.Signer
	bundle []byte // the SPIFFE bundle, marshalled once
	opts   Options
}

// NewCA returns a CA signing with key under chain (its certificate first,
// up to the root the bundle publishes). The same key signs JWT-SVIDs.
func NewCA(td spiffeid.TrustDomain, key crypto.Signer, chain []*x509.Certificate, o Options) (*CA, error) {
	if len(chain) == 0 {
		return nil, fmt.Errorf("%w: no CA certificate", ErrCA)
	}
	c := chain[0]
	if !c.IsCA || !c.BasicConstraintsValid || c.KeyUsage&x509.KeyUsageCertSign == 0 {
		return nil, fmt.Errorf("%w: certificate %q is not a CA certificate allowed to sign certificates", ErrCA, c.Subject)
	}
	if !samePublicKey(c.PublicKey, key.Public()) {
		return nil, fmt.Errorf("%w: the key is not the CA certificate's", ErrCA)
	}
	alg, err := jwsAlg(key)
	if err != nil {
		return nil, err
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	spki, _ := x509.MarshalPKIXPublicKey(key.Public())
	sum := sha256.Sum256(spki)
	ca := &CA{td: td, key: key, chain: chain, kid: base64.RawURLEncoding.EncodeToString(sum[:16]), opts: o}
	ca.jwt, err = gojose.NewSigner(gojose.SigningKey{Algorithm: alg, Key: key},
		(&gojose.SignerOptions{}).WithType("JWT").WithHeader("kid", ca.kid))
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCA, err)
	}
	b := spiffebundle.New(td)
	b.AddX509Authority(chain[len(chain)-1])
	if err := b.AddJWTAuthority(ca.kid, key.Public()); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCA, err)
	}
	if o.RefreshHint > 0 {
		b.SetRefreshHint(o.RefreshHint)
	}
	// The sequence number changes when the authorities do, as the
	// bundle endpoint profile asks: a CA key of the same age is the same
	// bundle.
	b.SetSequenceNumber(uint64(chain[0].NotBefore.Unix()))
	if ca.bundle, err = b.Marshal(); err != nil {
		return nil, fmt.Errorf("%w: bundle: %v", ErrCA, err)
	}
	return ca, nil
}

func samePublicKey(a, b crypto.PublicKey) bool {
	k, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && k.Equal(b)
}

func jwsAlg(key crypto.Signer) (gojose.SignatureAlgorithm, error) {
	switch k := key.Public().(type) {
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256():
			return gojose.ES256, nil
		case elliptic.P384():
			return gojose.ES384, nil
		}
	case *rsa.PublicKey:
		if k.N.BitLen() >= 2048 {
			return gojose.RS256, nil
		}
	}
	return "", fmt.Errorf("%w: the CA key must be ECDSA P-256/P-384 or RSA of 2048 bits or more", ErrCA)
}

// GenerateRoot makes the self-signed root certificate of a CA key the KBS
// generated itself, valid for ten years from now.
func GenerateRoot(td spiffeid.TrustDomain, key crypto.Signer, now time.Time) (*x509.Certificate, error) {
	serial, err := serialNumber()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{Organization: []string{"Cocoon KBS"}, CommonName: "SPIFFE CA " + td.Name()},
		URIs:                  []*url.URL{td.ID().URL()},
		NotBefore:             now.Add(-time.Minute),
		NotAfter:              now.AddDate(10, 0, 0),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCA, err)
	}
	return x509.ParseCertificate(der)
}

func serialNumber() (*big.Int, error) {
	return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
}

// TrustDomain is the CA's trust domain.
func (ca *CA) TrustDomain() spiffeid.TrustDomain { return ca.td }

// Bundle is the trust domain's SPIFFE bundle (a JWKS with the X.509 root
// and the JWT authority), as the bundle endpoint serves it.
func (ca *CA) Bundle() []byte { return ca.bundle }

// IssueX509 certifies pub as the X.509-SVID of id and returns the chain
// up to the root (DER, leaf first) with its expiry. The SVID never
// outlives the CA certificate.
func (ca *CA) IssueX509(id spiffeid.ID, pub crypto.PublicKey) ([][]byte, time.Time, error) {
	if err := checkPublicKey(pub); err != nil {
		return nil, time.Time{}, err
	}
	serial, err := serialNumber()
	if err != nil {
		return nil, time.Time{}, err
	}
	now := ca.opts.Now()
	notAfter := now.Add(ca.opts.X509TTL)
	if notAfter.After(ca.chain[0].NotAfter) {
		notAfter = ca.chain[0].NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{Organization: []string{"Cocoon"}},
		URIs:                  []*url.URL{id.URL()},
		NotBefore:             now.Add(-10 * time.Second),
		NotAfter:              notAfter,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment | x509.KeyUsageKeyAgreement,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.chain[0], pub, ca.key)
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("%w: %v", ErrCA, err)
	}
	out := [][]byte{der}
	// Intermediates go with the SVID; the root is the bundle's.
	for _, c := range ca.chain[:len(ca.chain)-1] {
		out = append(out, c.Raw)
	}
	return out, notAfter, nil
}

// IssueJWT signs a JWT-SVID of id for audience.
func (ca *CA) IssueJWT(id spiffeid.ID, audience []string) (string, time.Time, error) {
	now := ca.opts.Now()
	exp := now.Add(ca.opts.JWTTTL)
	tok, err := jwt.Signed(ca.jwt).Claims(jwt.Claims{
		Subject:  id.String(),
		Audience: jwt.Audience(audience),
		IssuedAt: jwt.NewNumericDate(now),
		Expiry:   jwt.NewNumericDate(exp),
	}).Serialize()
	if err != nil {
		return "", time.Time{}, fmt.Errorf("%w: %v", ErrCA, err)
	}
	return tok, exp, nil
}

// checkPublicKey accepts the SVID keys SPIFFE peers take: ECDSA P-256 or
// P-384, or RSA of 2048 to 8192 bits.
func checkPublicKey(pub crypto.PublicKey) error {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if k.Curve == elliptic.P256() || k.Curve == elliptic.P384() {
			return nil
		}
	case *rsa.PublicKey:
		if n := k.N.BitLen(); n >= 2048 && n <= 8192 {
			return nil
		}
	}
	return fmt.Errorf("%w: SVID key must be ECDSA P-256/P-384 or RSA 2048-8192, not %T", ErrBadRequest, pub)
}
