// Package snp verifies AMD SEV-SNP evidence: the attestation report the
// firmware signs with the chip's VCEK (or a cloud provider's VLEK), the
// certificate chain from that key to AMD's root for the product (Milan,
// Genoa, Turin), and the binding of the report to the runtime data and the
// initdata. It returns the claims Trustee's SNP verifier returns, so
// Trustee's attestation policies apply unchanged.
//
// Parsing (ParseReport, ParseEvidence) is apart from verification
// (Verifier); both report every failed check with its own error, each
// wrapping one of the verifier package's shared errors.
package snp

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"github.com/google/go-sev-guest/abi"
	"github.com/google/go-sev-guest/verify"

	"github.com/cocoon-cc/cocoon/attestation/verifier"
)

// Options configure a Verifier. The zero value verifies with AMD's built-in
// roots at the current time, takes the endorsement key from the evidence
// and fetches missing VCEKs from AMD's KDS.
type Options struct {
	// Now is the time certificates must be valid at; set it to verify old
	// evidence. Default time.Now.
	Now func() time.Time
	// Product names the EPYC generation of version 2 reports, which carry
	// no CPUID; it lets their VCEK be fetched. When set, newer reports must
	// be of this product.
	Product Product
	// CertDir is a directory of endorsement certificates, as snpguest
	// writes them (vcek.der, vlek.der, ask.pem, ark.pem, cert_chain.pem,
	// PEM or DER) or as Trustee's offline KDS store
	// (vcek/<hwid>/[<tcb>_]vcek.der). It fills what the evidence lacks.
	CertDir string
	// DisableKDS keeps the verifier off the network.
	DisableKDS bool
	// KDSURL is the KDS base URL. Default DefaultKDSURL.
	KDSURL string
	// HTTPClient fetches from the KDS. Default: an http.Client with a 30 s
	// timeout.
	HTTPClient Getter
	// CacheDir keeps VCEKs fetched from the KDS across restarts, in
	// Trustee's offline store layout. Empty: memory only.
	CacheDir string
	// KDSAttempts bounds the requests for one VCEK. Default 3.
	KDSAttempts int
	// KDSBackoff is the first wait between attempts; it doubles up to
	// KDSMaxBackoff. Defaults 1 s and 10 s. A 429 whose Retry-After exceeds
	// KDSMaxBackoff ends the attempts at once.
	KDSBackoff, KDSMaxBackoff time.Duration
	// Roots replaces AMD's built-in roots, as go-sev-guest's TrustedRoots
	// does: PEM certificates, for each product trusted its self-signed ARK
	// ("ARK-<product>"), the ASK ("SEV-<product>") and optionally the ASVK
	// ("SEV-VLEK-<product>") it signed, as AMD's KDS serves them. Only the
	// products named are trusted. For AMD's pre-production parts and test
	// chains; empty: AMD's roots.
	Roots []byte
}

// Verifier verifies SNP evidence. It is safe for concurrent use.
type Verifier struct {
	opts  Options
	roots map[Product]*roots
	kds   *kdsClient                                 // nil when DisableKDS
	keys  *verifier.Cache[string, *endorsement]      // verified VCEKs/VLEKs by DER
	cas   *verifier.Cache[string, *x509.Certificate] // supplied ARKs/ASKs verified against the roots, by DER
}

// New returns a Verifier.
func New(opts Options) (*Verifier, error) {
	rts, err := builtinRoots()
	if len(opts.Roots) != 0 {
		rts, err = parseRoots(opts.Roots)
	}
	if err != nil {
		return nil, err
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	v := &Verifier{opts: opts, roots: rts, keys: verifier.NewCache[string, *endorsement](maxCached), cas: verifier.NewCache[string, *x509.Certificate](maxCached)}
	if !opts.DisableKDS {
		v.kds = newKDSClient(opts)
	}
	return v, nil
}

func newKDSClient(o Options) *kdsClient {
	k := &kdsClient{base: o.KDSURL, http: o.HTTPClient, cacheDir: o.CacheDir,
		attempts: o.KDSAttempts, backoff: o.KDSBackoff, maxBackoff: o.KDSMaxBackoff, mem: verifier.NewCache[string, []byte](maxCached)}
	if k.base == "" {
		k.base = DefaultKDSURL
	}
	if k.http == nil {
		k.http = &http.Client{Timeout: 30 * time.Second}
	}
	if k.attempts <= 0 {
		k.attempts = 3
	}
	if k.backoff <= 0 {
		k.backoff = time.Second
	}
	if k.maxBackoff <= 0 {
		k.maxBackoff = 10 * time.Second
	}
	return k
}

// Evaluate implements verifier.Verifier for Trustee's JSON evidence.
func (v *Verifier) Evaluate(ctx context.Context, evidence json.RawMessage, want verifier.Expected) ([]verifier.TeeClaims, error) {
	ev, err := ParseEvidence(evidence)
	if err != nil {
		return nil, err
	}
	return verifier.CPU(v.Verify(ctx, ev.Report, ev.Certs, want))
}

// VerifyReport verifies a raw 1184-byte report, as snpguest saves it, with
// the certificates given (any may be empty) and those the Options lead to.
func (v *Verifier) VerifyReport(ctx context.Context, raw []byte, certs CertChain, want verifier.Expected) (verifier.Claims, error) {
	r, err := ParseReport(raw)
	if err != nil {
		return nil, err
	}
	return v.Verify(ctx, r, certs, want)
}

// Verify runs the checks in Trustee's order: endorsement chain, report
// signature, key binding (chip and TCB), VMPL, report data, initdata.
func (v *Verifier) Verify(ctx context.Context, r *Report, certs CertChain, want verifier.Expected) (verifier.Claims, error) {
	if r.Signer() == abi.NoneReportSigner {
		return nil, ErrUnsignedReport
	}
	product, err := v.reportProduct(r)
	if err != nil {
		return nil, err
	}
	if certs, err = v.gather(ctx, r, product, certs); err != nil {
		return nil, err
	}
	key, err := v.endorse(r, product, certs)
	if err != nil {
		return nil, err
	}
	if err := verify.SnpReportSignature(r.raw, key.cert); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrReportSignature, err)
	}
	if err := checkKeyBinding(r, key); err != nil {
		return nil, err
	}
	if r.proto.Vmpl != 0 {
		return nil, fmt.Errorf("%w: VMPL %d", ErrVMPL, r.proto.Vmpl)
	}
	if err := verifier.CheckReportData(r.proto.ReportData, want.ReportData); err != nil {
		return nil, fmt.Errorf("snp: %w: report has %x", err, r.proto.ReportData)
	}
	if err := verifier.CheckInitData(r.proto.HostData, want.InitDataDigest); err != nil {
		return nil, fmt.Errorf("snp: %w: HOST_DATA is %x", err, r.proto.HostData)
	}
	return Claims(r), nil
}

// reportProduct is the product the report must come from, or
// ProductUnknown for a version 2 report without Options.Product (the
// endorsement key's issuer then decides).
func (v *Verifier) reportProduct(r *Report) (Product, error) {
	p := r.Product()
	if p == ProductUnknown && r.proto.Version >= abi.ReportVersion3 {
		return p, fmt.Errorf("%w: CPUID family %#x model %#x", ErrUnknownProduct, r.raw[offCPUIDFamily], r.raw[offCPUIDModel])
	}
	switch {
	case v.opts.Product == ProductUnknown:
		return p, nil
	case p == ProductUnknown:
		return v.opts.Product, nil
	case p != v.opts.Product:
		return p, fmt.Errorf("%w: report from %v, configured %v", ErrProductMismatch, p, v.opts.Product)
	}
	return p, nil
}

// gather completes the evidence's certificates from the certificate
// directory, then the KDS.
func (v *Verifier) gather(ctx context.Context, r *Report, p Product, certs CertChain) (CertChain, error) {
	var err error
	if v.opts.CertDir != "" {
		if certs, err = readCertDir(v.opts.CertDir, r, certs); err != nil {
			return certs, err
		}
	}
	if len(certs.endorsementKey(r.Signer())) != 0 || v.kds == nil || r.Signer() != abi.VcekReportSigner {
		return certs, nil
	}
	switch {
	case p == ProductUnknown:
		return certs, fmt.Errorf("%w: a version 2 report needs Options.Product to fetch its VCEK", ErrUnknownProduct)
	case isZero(r.proto.ChipId):
		return certs, fmt.Errorf("%w: CHIP_ID is masked, so the KDS cannot serve the VCEK", ErrNoEndorsementKey)
	}
	certs.VCEK, err = v.kds.vcek(ctx, r, p)
	return certs, err
}

func isZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}
