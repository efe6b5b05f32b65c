// Package dcap verifies Intel DCAP ECDSA quotes, what SGX and TDX quotes
// share: the PCK certificate chain to Intel's SGX Root CA, the QE report
// and its binding to the attestation key, the quote signature, TCB info and
// QE identity collateral with their CRLs, and the TCB status of the
// platform and the quoting enclave. The sgx and tdx verifiers add their
// enclave's report body, TCB levels and claims.
package dcap

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/google/go-tdx-guest/pcs"
	"golang.org/x/sync/singleflight"

	"github.com/cocoon-cc/cocoon/attestation/verifier"
)

// Options configure a Verifier. The zero value fetches collateral from
// Intel PCS and trusts Intel's SGX Root CA.
type Options struct {
	// CollateralURL is the base URL of Intel PCS (the default,
	// https://api.trustedservices.intel.com) or of a PCCS, e.g.
	// https://pccs.example:8081.
	CollateralURL string
	// CollateralDir reads saved PCS responses from a directory instead of
	// the network, for air-gapped verifiers:
	//
	//	tcb-info-<FMSPC>.json               TDX TCB info body (FMSPC in upper-case hex)
	//	tcb-info-<FMSPC>.json.issuer-chain  its TCB-Info-Issuer-Chain header
	//	qe-identity.json                    TD QE identity body
	//	qe-identity.json.issuer-chain       its SGX-Enclave-Identity-Issuer-Chain header
	//	sgx-tcb-info-<FMSPC>.json           SGX TCB info, and its .issuer-chain
	//	sgx-qe-identity.json                SGX QE identity, and its .issuer-chain
	//	pck-crl-platform.der                PCK CRL of the platform CA (pck-crl-processor.der)
	//	root-ca-crl.der                     Intel SGX Root CA CRL
	//
	// CRLs may be DER, PEM or hex; issuer chains PEM, URL-encoded or not.
	CollateralDir string
	// TCBUpdate picks Intel's TCB recovery stream: "early" (the default, as
	// in Trustee) or "standard".
	TCBUpdate string
	// Getter fetches collateral over HTTP. Defaults to HTTPGetter with a
	// 30 s timeout.
	Getter Getter
	// Now is the time at which certificates and collateral must be valid.
	// Defaults to time.Now; set it to verify old evidence.
	Now func() time.Time
	// CollateralMaxAge is how long fetched collateral is reused before it
	// is fetched again, even if it is still valid, so that TCB recoveries
	// Intel publishes are picked up. Defaults to 24 hours.
	CollateralMaxAge time.Duration
	// Roots are the trusted root CAs. Defaults to IntelRootCA.
	Roots []*x509.Certificate
}

const (
	intelPCSURL  = "https://api.trustedservices.intel.com"
	intelPCSHost = "api.trustedservices.intel.com"
	// maxCacheEntries bounds each cache; a fleet has few PCK chains per
	// platform and few FMSPCs.
	maxCacheEntries      = 4096
	defaultCollateralAge = 24 * time.Hour
)

// Verifier verifies the DCAP part of one TEE's quotes. It caches verified
// PCK chains and collateral; it is safe for concurrent use.
type Verifier struct {
	tee    TEE
	now    func() time.Time
	maxAge time.Duration
	roots  []*x509.Certificate
	src    collateralSource

	chains      *verifier.Cache[[32]byte, *VerifiedChain]
	collaterals *verifier.Cache[collateralKey, *cachedCollateral]
	fetches     singleflight.Group // one fetch per platform at a time
}

type cachedCollateral struct {
	*Collateral
	fetched time.Time
}

// VerifiedChain is a PCK chain whose signatures verified to TrustedRoot.
type VerifiedChain struct {
	*PCKChain
	TrustedRoot *x509.Certificate
}

// collateralKey names the collateral of a platform: its FMSPC, PCK CA kind
// and the CA's key, which signs the PCK CRL.
type collateralKey struct {
	fmspc, ca, caKey string
}

// New returns a Verifier of tee's quotes.
func New(tee TEE, opts Options) (*Verifier, error) {
	v := &Verifier{
		tee:         tee,
		now:         opts.Now,
		maxAge:      opts.CollateralMaxAge,
		roots:       opts.Roots,
		chains:      verifier.NewCache[[32]byte, *VerifiedChain](maxCacheEntries),
		collaterals: verifier.NewCache[collateralKey, *cachedCollateral](maxCacheEntries),
	}
	if v.now == nil {
		v.now = time.Now
	}
	if v.maxAge <= 0 {
		v.maxAge = defaultCollateralAge
	}
	if len(v.roots) == 0 {
		v.roots = []*x509.Certificate{IntelRootCA()}
	}
	src, err := newSource(&opts, v.roots[0])
	if err != nil {
		return nil, err
	}
	v.src = src
	return v, nil
}

func newSource(opts *Options, root *x509.Certificate) (collateralSource, error) {
	if opts.CollateralDir != "" {
		return dirSource{dir: opts.CollateralDir}, nil
	}
	update := opts.TCBUpdate
	switch update {
	case "":
		update = "early"
	case "early", "standard":
	default:
		return nil, fmt.Errorf("dcap: TCBUpdate %q is neither early nor standard", update)
	}
	base := opts.CollateralURL
	if base == "" {
		base = intelPCSURL
	}
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, fmt.Errorf("dcap: collateral URL %q is not an http(s) URL", base)
	}
	s := &pcsSource{base: strings.TrimSuffix(base, "/"), update: update, getter: opts.Getter}
	if s.getter == nil {
		s.getter = HTTPGetter{Client: &http.Client{Timeout: 30 * time.Second}}
	}
	// Intel PCS has no root CA CRL endpoint; the root names where it is.
	s.rootCRLURL = s.base + "/sgx/certification/v4/rootcacrl"
	if u.Host == intelPCSHost {
		if len(root.CRLDistributionPoints) == 0 {
			return nil, errors.New("dcap: root CA names no CRL distribution point")
		}
		s.rootCRLURL = root.CRLDistributionPoints[0]
	}
	return s, nil
}

// Result is a quote whose signatures, chain and collateral verified.
type Result struct {
	Chain      *VerifiedChain
	Collateral *Collateral
	// QELevel is the QE identity's TCB level the quoting enclave reaches.
	QELevel *pcs.TcbLevel
	// TCB is what the TEE's evaluation made of the TCB levels.
	TCB *TCBResult
}

// TCBEvaluator matches a verified quote's platform against the TCB levels
// of its TEE's collateral.
type TCBEvaluator func(*Result) (*TCBResult, error)

// Verify checks a parsed quote: its signed data signed by the attestation
// key, the QE report binding that key and signed by the PCK key, the PCK
// chain, the collateral of its platform, revocation and the quoting
// enclave's identity, then evaluates the TEE's TCB with tcb.
func (v *Verifier) Verify(ctx context.Context, q *Quote, tcb TCBEvaluator) (*Result, error) {
	now := v.now()
	sig := &q.SignatureData
	chain, err := v.verifyQuoteSignatures(q.SignedData, sig, now)
	if err != nil {
		return nil, err
	}
	coll, err := v.collateral(ctx, chain, now)
	if err != nil {
		return nil, err
	}
	if err := checkRevocation(chain, coll); err != nil {
		return nil, err
	}
	qe, err := CheckQEIdentity(&sig.QEReport, &coll.QEIdentity)
	if err != nil {
		return nil, err
	}
	r := &Result{Chain: chain, Collateral: coll, QELevel: qe}
	if r.TCB, err = tcb(r); err != nil {
		return nil, err
	}
	return r, nil
}

// VerifySignatures checks what a quote proves without collateral: its PCK
// chain to a trusted root, valid now, and the signatures inside the quote.
func (v *Verifier) VerifySignatures(q *Quote) (*VerifiedChain, error) {
	return v.verifyQuoteSignatures(q.SignedData, &q.SignatureData, v.now())
}

func (v *Verifier) verifyQuoteSignatures(signedData []byte, sig *SignatureData, now time.Time) (*VerifiedChain, error) {
	chain, err := v.verifiedChain(sig.PCKChain, now)
	if err != nil {
		return nil, err
	}
	return chain, verifySignatures(signedData, sig, chain.LeafKey)
}

// verifiedChain parses and verifies the quote's PCK chain, or takes it from
// the cache, and checks it is valid now.
func (v *Verifier) verifiedChain(pemChain []byte, now time.Time) (*VerifiedChain, error) {
	key := sha256.Sum256(pemChain)
	c, ok := v.chains.Get(key)
	if !ok {
		parsed, err := ParsePCKChain(pemChain)
		if err != nil {
			return nil, err
		}
		root, err := parsed.verifySignatures(v.roots)
		if err != nil {
			return nil, err
		}
		c = &VerifiedChain{PCKChain: parsed, TrustedRoot: root}
		v.chains.Put(key, c)
	}
	if err := checkValidity(now, c.Leaf, c.Intermediate, c.TrustedRoot); err != nil {
		return nil, err
	}
	return c, nil
}

// verifySignatures checks the chain of trust inside the quote: the PCK key
// signed the QE report, the QE report binds the attestation key, and the
// attestation key signed the header and body.
func verifySignatures(signedData []byte, s *SignatureData, pckKey *ecdsa.PublicKey) error {
	if !VerifyP256(pckKey, s.RawQEReport, s.QEReportSignature) {
		return ErrQEReportSignature
	}
	h := sha256.New()
	h.Write(s.AttestationKey)
	h.Write(s.QEAuthData)
	want := h.Sum(make([]byte, 0, 64))
	want = append(want, make([]byte, 32)...)
	if !bytes.Equal(s.QEReport.ReportData[:], want) {
		return fmt.Errorf("%w: got %x", ErrQEReportData, s.QEReport.ReportData)
	}
	ak, err := ParseRawP256(s.AttestationKey)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrAttestationKey, err)
	}
	if !VerifyP256(ak, signedData, s.Signature) {
		return ErrQuoteSignature
	}
	return nil
}

// collateral returns verified collateral for the chain's platform that is
// valid now, from the cache or freshly fetched.
func (v *Verifier) collateral(ctx context.Context, chain *VerifiedChain, now time.Time) (*Collateral, error) {
	key := collateralKey{string(chain.Platform.FMSPC), chain.CA, string(chain.Intermediate.RawSubjectPublicKeyInfo)}
	c, ok := v.collaterals.Get(key)
	if ok && now.Sub(c.fetched) < v.maxAge && c.checkTime(now) == nil {
		return c.Collateral, nil
	}
	fresh, err, _ := v.fetches.Do(fmt.Sprint(key), func() (any, error) {
		raw, err := v.src.fetch(ctx, v.tee, chain.Platform.FMSPC, chain.CA)
		if err != nil {
			return nil, err
		}
		c, err := verifyCollateral(v.tee, raw, chain.PCKChain, chain.TrustedRoot, now)
		if err != nil {
			return nil, err
		}
		v.collaterals.Put(key, &cachedCollateral{Collateral: c, fetched: now})
		return c, nil
	})
	if err != nil {
		return nil, err
	}
	// A concurrent caller may have fetched it for a slightly different time.
	return fresh.(*Collateral), fresh.(*Collateral).checkTime(now)
}

func checkRevocation(chain *VerifiedChain, c *Collateral) error {
	if isRevoked(c.rootRevoked, chain.Intermediate) {
		return fmt.Errorf("%w: PCK CA %x is on the root CA CRL", ErrPCKRevoked, chain.Intermediate.SerialNumber)
	}
	if isRevoked(c.pckRevoked, chain.Leaf) {
		return fmt.Errorf("%w: PCK certificate %x is on the PCK CRL", ErrPCKRevoked, chain.Leaf.SerialNumber)
	}
	return nil
}
