// Package tdx verifies Intel TDX evidence the way Trustee's TDX verifier
// does: DCAP quote verification (PCK chain to Intel's SGX Root CA, QE
// report, quote signature, TCB info and QE identity collateral, CRLs, TCB
// status), report data and MRCONFIGID bindings, and replay of the CC event
// log against the RTMRs. Claims carry Trustee's names so its policies apply
// unchanged.
//
// Parsing (quote.go, pck.go, eventlog.go) is kept apart from verification
// (tdx.go, collateral.go, tcb.go) and from claims (claims.go).
package tdx

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

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

// Verifier verifies TDX evidence. It caches verified PCK chains and
// collateral; it is safe for concurrent use.
type Verifier struct {
	now    func() time.Time
	maxAge time.Duration
	roots  []*x509.Certificate
	src    collateralSource

	mu          sync.Mutex
	chains      map[[32]byte]*verifiedChain
	collaterals map[collateralKey]*cachedCollateral
	fetches     singleflight.Group // one fetch per platform at a time
}

type cachedCollateral struct {
	*collateral
	fetched time.Time
}

// verifiedChain is a PCK chain whose signatures verified to trustedRoot.
type verifiedChain struct {
	*pckChain
	trustedRoot *x509.Certificate
}

// collateralKey names the collateral of a platform: its FMSPC, PCK CA kind
// and the CA's key, which signs the PCK CRL.
type collateralKey struct {
	fmspc, ca, caKey string
}

var _ verifier.Verifier = (*Verifier)(nil)

// New returns a Verifier.
func New(opts Options) (*Verifier, error) {
	v := &Verifier{
		now:         opts.Now,
		maxAge:      opts.CollateralMaxAge,
		roots:       opts.Roots,
		chains:      make(map[[32]byte]*verifiedChain),
		collaterals: make(map[collateralKey]*cachedCollateral),
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
		return nil, fmt.Errorf("tdx: TCBUpdate %q is neither early nor standard", update)
	}
	base := opts.CollateralURL
	if base == "" {
		base = intelPCSURL
	}
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, fmt.Errorf("tdx: collateral URL %q is not an http(s) URL", base)
	}
	s := &pcsSource{base: strings.TrimSuffix(base, "/"), update: update, getter: opts.Getter}
	if s.getter == nil {
		s.getter = HTTPGetter{Client: &http.Client{Timeout: 30 * time.Second}}
	}
	// Intel PCS has no root CA CRL endpoint; the root names where it is.
	s.rootCRLURL = s.base + "/sgx/certification/v4/rootcacrl"
	if u.Host == intelPCSHost {
		if len(root.CRLDistributionPoints) == 0 {
			return nil, errors.New("tdx: root CA names no CRL distribution point")
		}
		s.rootCRLURL = root.CRLDistributionPoints[0]
	}
	return s, nil
}

// evidence is Trustee's TDX evidence. The members stay raw: the CC event
// log is usually 1 MiB of base64, which is decoded without the copy and
// rune-by-rune unquoting a string field would cost.
type evidence struct {
	Quote      json.RawMessage `json:"quote"`
	CCEventLog json.RawMessage `json:"cc_eventlog"`
}

// Evaluate implements verifier.Verifier for evidence of the form
// {"quote":"<base64>","cc_eventlog":"<base64>"|null}.
func (v *Verifier) Evaluate(ctx context.Context, raw json.RawMessage, expected verifier.Expected) ([]verifier.TeeClaims, error) {
	var ev evidence
	if err := json.Unmarshal(raw, &ev); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrEvidenceEncoding, err)
	}
	quote, err := decodeBase64(ev.Quote)
	if err != nil {
		return nil, fmt.Errorf("%w: quote: %v", ErrEvidenceEncoding, err)
	}
	if len(quote) == 0 {
		return nil, fmt.Errorf("%w: empty quote", ErrEvidenceEncoding)
	}
	log, err := decodeBase64(ev.CCEventLog)
	if err != nil {
		return nil, fmt.Errorf("%w: cc_eventlog: %v", ErrEvidenceEncoding, err)
	}
	claims, err := v.VerifyQuote(ctx, quote, log, expected)
	if err != nil {
		return nil, err
	}
	return []verifier.TeeClaims{{Class: "cpu", Claims: claims}}, nil
}

// decodeBase64 decodes a JSON string of standard base64; a missing or null
// member decodes to nothing.
func decodeBase64(raw json.RawMessage) ([]byte, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	if raw[0] != '"' {
		return nil, errors.New("not a string")
	}
	text := raw[1 : len(raw)-1]
	if bytes.IndexByte(text, '\\') >= 0 {
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return nil, err
		}
		text = []byte(s)
	}
	out := make([]byte, base64.StdEncoding.DecodedLen(len(text)))
	n, err := base64.StdEncoding.Decode(out, text)
	return out[:n], err
}

// VerifyQuote verifies a raw quote and, when eventLog is not empty, the CC
// event log that goes with it, and returns the claims.
func (v *Verifier) VerifyQuote(ctx context.Context, rawQuote, eventLog []byte, expected verifier.Expected) (verifier.Claims, error) {
	q, err := ParseQuote(rawQuote)
	if err != nil {
		return nil, err
	}
	now := v.now()
	chain, err := v.verifiedChain(q.PCKChain, now)
	if err != nil {
		return nil, err
	}
	if err := verifyQuoteSignatures(q, chain.leafKey); err != nil {
		return nil, err
	}
	coll, err := v.collateral(ctx, chain, now)
	if err != nil {
		return nil, err
	}
	if err := checkRevocation(chain, coll); err != nil {
		return nil, err
	}
	tcb, err := evaluateTCB(q, &chain.platform, coll)
	if err != nil {
		return nil, err
	}
	if err := checkBindings(q, expected); err != nil {
		return nil, err
	}
	log, err := verifyEventLog(eventLog, q)
	if err != nil {
		return nil, err
	}
	claims := evidenceClaims(q, log, &chain.platform)
	addDCAPClaims(claims, chain, coll, tcb)
	return claims, nil
}

// verifiedChain parses and verifies the quote's PCK chain, or takes it from
// the cache, and checks it is valid now.
func (v *Verifier) verifiedChain(pemChain []byte, now time.Time) (*verifiedChain, error) {
	key := sha256.Sum256(pemChain)
	v.mu.Lock()
	c := v.chains[key]
	v.mu.Unlock()
	if c == nil {
		parsed, err := parsePCKChain(pemChain)
		if err != nil {
			return nil, err
		}
		root, err := parsed.verifySignatures(v.roots)
		if err != nil {
			return nil, err
		}
		c = &verifiedChain{pckChain: parsed, trustedRoot: root}
		v.mu.Lock()
		if len(v.chains) >= maxCacheEntries {
			clear(v.chains)
		}
		v.chains[key] = c
		v.mu.Unlock()
	}
	if err := checkValidity(now, c.leaf, c.intermediate, c.trustedRoot); err != nil {
		return nil, err
	}
	return c, nil
}

// verifyQuoteSignatures checks the chain of trust inside the quote: the PCK
// key signed the QE report, the QE report binds the attestation key, and
// the attestation key signed the header and TD report.
func verifyQuoteSignatures(q *Quote, pckKey *ecdsa.PublicKey) error {
	if !verifyP256(pckKey, q.RawQEReport, q.QEReportSignature) {
		return ErrQEReportSignature
	}
	h := sha256.New()
	h.Write(q.AttestationKey)
	h.Write(q.QEAuthData)
	want := h.Sum(make([]byte, 0, 64))
	want = append(want, make([]byte, 32)...)
	if !bytes.Equal(q.QEReport.ReportData[:], want) {
		return fmt.Errorf("%w: got %x", ErrQEReportData, q.QEReport.ReportData)
	}
	ak, err := parseRawP256(q.AttestationKey)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrAttestationKey, err)
	}
	if !verifyP256(ak, q.SignedData, q.Signature) {
		return ErrQuoteSignature
	}
	return nil
}

// collateral returns verified collateral for the chain's platform that is
// valid now, from the cache or freshly fetched.
func (v *Verifier) collateral(ctx context.Context, chain *verifiedChain, now time.Time) (*collateral, error) {
	key := collateralKey{string(chain.platform.fmspc), chain.ca, string(chain.intermediate.RawSubjectPublicKeyInfo)}
	v.mu.Lock()
	c := v.collaterals[key]
	v.mu.Unlock()
	if c != nil && now.Sub(c.fetched) < v.maxAge && c.checkTime(now) == nil {
		return c.collateral, nil
	}
	fresh, err, _ := v.fetches.Do(fmt.Sprint(key), func() (any, error) {
		raw, err := v.src.fetch(ctx, chain.platform.fmspc, chain.ca)
		if err != nil {
			return nil, err
		}
		c, err := verifyCollateral(raw, chain.pckChain, chain.trustedRoot, now)
		if err != nil {
			return nil, err
		}
		v.mu.Lock()
		if len(v.collaterals) >= maxCacheEntries {
			clear(v.collaterals)
		}
		v.collaterals[key] = &cachedCollateral{collateral: c, fetched: now}
		v.mu.Unlock()
		return c, nil
	})
	if err != nil {
		return nil, err
	}
	// A concurrent caller may have fetched it for a slightly different time.
	return fresh.(*collateral), fresh.(*collateral).checkTime(now)
}

func checkRevocation(chain *verifiedChain, c *collateral) error {
	if isRevoked(c.rootRevoked, chain.intermediate) {
		return fmt.Errorf("%w: PCK CA %x is on the root CA CRL", ErrPCKRevoked, chain.intermediate.SerialNumber)
	}
	if isRevoked(c.pckRevoked, chain.leaf) {
		return fmt.Errorf("%w: PCK certificate %x is on the PCK CRL", ErrPCKRevoked, chain.leaf.SerialNumber)
	}
	return nil
}

func checkBindings(q *Quote, expected verifier.Expected) error {
	if err := verifier.CheckReportData(q.Body.ReportData[:], expected.ReportData); err != nil {
		return fmt.Errorf("tdx: REPORT_DATA %x: %w", q.Body.ReportData, err)
	}
	if err := verifier.CheckInitData(q.Body.MrConfigID[:], expected.InitDataDigest); err != nil {
		return fmt.Errorf("tdx: MRCONFIGID %x: %w", q.Body.MrConfigID, err)
	}
	return nil
}

// verifyEventLog parses the CC event log, if any, and checks it replays to
// the quote's RTMRs.
func verifyEventLog(data []byte, q *Quote) (*EventLog, error) {
	if len(data) == 0 {
		return nil, nil
	}
	log, err := ParseEventLog(data)
	if err != nil {
		return nil, err
	}
	rtmrs, err := log.ReplayRTMRs()
	if err != nil {
		return nil, err
	}
	for i := range rtmrs {
		if rtmrs[i] != q.Body.RTMR[i] {
			return nil, fmt.Errorf("%w: RTMR%d replays to %x, quote has %x", ErrRTMRMismatch, i, rtmrs[i], q.Body.RTMR[i])
		}
	}
	return log, nil
}
