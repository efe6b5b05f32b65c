// Package nvidia verifies NVIDIA Hopper GPU evidence locally, as Trustee's
// local NVIDIA verifier does: each device's SPDM measurement report signed
// by its attestation key, the key's certificate chain to NVIDIA's device
// root, the key's firmware id equal to the report's, and the report's nonce
// equal to the expected report data. The evidence arrives as a CPU TEE's
// additional evidence; its claims (device class "gpu") are appraised by
// the "<policy>_gpu" attestation policy.
package nvidia

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/big"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/cocoon-cc/cocoon/attestation/verifier"
)

// Evidence is what guest-components' NVIDIA attester sends.
type Evidence struct {
	Devices []Device `json:"device_evidence_list"`
}

// Device is one device's report and certificate chain.
type Device struct {
	// Arch is "HOPPER", "BLACKWELL" or "LS10" (any case).
	Arch string `json:"arch"`
	UUID string `json:"uuid"`
	// Evidence is the measurement report, hex or standard base64.
	Evidence string `json:"evidence"`
	// Certificate is the standard base64 of the PEM chain.
	Certificate string `json:"certificate"`
}

// maxDevices bounds the list: an HGX board has 8 GPUs and 4 switches.
const maxDevices = 64

// Options configure the verifier.
type Options struct {
	// Now is the verification time; time.Now when nil.
	Now func() time.Time
	// OCSPURL, when set, is asked about every certificate between the
	// attestation key's and the root (NVIDIAOCSP is NVIDIA's); HTTP is
	// the client, http.DefaultClient when nil. Trustee's local verifier
	// asks no responder.
	OCSPURL string
	HTTP    *http.Client
	// Roots are PEM certificates trusted as device roots instead of
	// NVIDIA's (DeviceRootSHA256), for test GPUs.
	Roots []*x509.Certificate
}

// Verifier implements verifier.Verifier for NVIDIA GPUs.
type Verifier struct {
	ocsp   *revocation // nil: no OCSP
	now    func() time.Time
	roots  map[[32]byte]bool
	chains *verifier.Cache[[32]byte, *chain] // verified chains, by SHA-256 of the PEM
}

// maxChains bounds the verified-chain cache: one chain per GPU.
const maxChains = 4096

// New returns an NVIDIA verifier.
func New(o Options) *Verifier {
	v := &Verifier{now: o.Now, roots: map[[32]byte]bool{}, chains: verifier.NewCache[[32]byte, *chain](maxChains)}
	if v.now == nil {
		v.now = time.Now
	}
	if o.OCSPURL != "" {
		v.ocsp = &revocation{url: o.OCSPURL, http: o.HTTP, good: verifier.NewCache[[32]byte, time.Time](maxChains)}
		if v.ocsp.http == nil {
			v.ocsp.http = http.DefaultClient
		}
	}
	for _, c := range o.Roots {
		v.roots[sha256.Sum256(c.Raw)] = true
	}
	if len(o.Roots) == 0 {
		var pin [32]byte
		hex.Decode(pin[:], []byte(DeviceRootSHA256))
		v.roots[pin] = true
	}
	return v
}

// Evaluate verifies every device of the evidence; each gives claims of
// class "gpu", in the list's order.
func (v *Verifier) Evaluate(ctx context.Context, raw json.RawMessage, want verifier.Expected) ([]verifier.TeeClaims, error) {
	var ev Evidence
	if err := verifier.DecodeStrict(raw, &ev); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrEvidenceJSON, err)
	}
	if len(ev.Devices) == 0 || len(ev.Devices) > maxDevices {
		return nil, fmt.Errorf("%w: %d devices", ErrEvidenceJSON, len(ev.Devices))
	}
	out := make([]verifier.TeeClaims, 0, len(ev.Devices))
	for i, d := range ev.Devices {
		c, err := v.VerifyDevice(ctx, d, want)
		if err != nil {
			return nil, fmt.Errorf("device %d: %w", i, err)
		}
		out = append(out, verifier.TeeClaims{Class: "gpu", Claims: c})
	}
	return out, nil
}

// VerifyDevice verifies one device's evidence; each check fails with its
// own error.
func (v *Verifier) VerifyDevice(ctx context.Context, d Device, want verifier.Expected) (verifier.Claims, error) {
	if !strings.EqualFold(d.Arch, "hopper") {
		return nil, fmt.Errorf("%w: %q (only Hopper GPUs are verified locally)", ErrUnsupportedArch, d.Arch)
	}
	report, err := decodeReport(d.Evidence)
	if err != nil {
		return nil, err
	}
	pemChain, err := base64.StdEncoding.DecodeString(d.Certificate)
	if err != nil {
		return nil, fmt.Errorf("%w: certificate: %v", ErrEvidenceJSON, err)
	}
	ch, err := v.chain(pemChain)
	if err != nil {
		return nil, err
	}
	if err := verifySignature(ch.key, report); err != nil {
		return nil, err
	}
	if err := ch.check(v.now(), report.FWID); err != nil {
		return nil, err
	}
	if v.ocsp != nil {
		if err := v.ocsp.check(ctx, ch.certs, v.now()); err != nil {
			return nil, err
		}
	}
	// The driver sends the first 32 bytes of the report data as the nonce.
	if want.ReportData != nil && !bytes.Equal(report.Nonce, verifier.Fit(want.ReportData, NonceSize)) {
		return nil, ErrNonce
	}
	return claimsOf(d, report), nil
}

// chain verifies a PEM chain once: a GPU presents the same chain with
// every report.
func (v *Verifier) chain(pemChain []byte) (*chain, error) {
	key := sha256.Sum256(pemChain)
	if ch, ok := v.chains.Get(key); ok {
		return ch, nil
	}
	certs, err := ParseChain(pemChain)
	if err != nil {
		return nil, err
	}
	ch, err := verifyChain(certs, v.roots)
	if err != nil {
		return nil, err
	}
	v.chains.Put(key, ch)
	return ch, nil
}

// decodeReport accepts the report in hex (the original form) or base64.
func decodeReport(s string) (*Report, error) {
	b, err := hex.DecodeString(strings.TrimSpace(s))
	if err != nil {
		if b, err = base64.StdEncoding.DecodeString(s); err != nil {
			return nil, fmt.Errorf("%w: evidence is neither hex nor base64", ErrEvidenceJSON)
		}
	}
	return ParseReport(b)
}

// verifySignature checks the raw P-384 signature over SHA-384 of the
// request and response.
func verifySignature(key *ecdsa.PublicKey, r *Report) error {
	d := sha512.Sum384(r.Signed)
	sr := new(big.Int).SetBytes(r.Signature[:signatureLen/2])
	ss := new(big.Int).SetBytes(r.Signature[signatureLen/2:])
	if !ecdsa.Verify(key, d[:], sr, ss) {
		return ErrSignature
	}
	return nil
}

// claimsOf names the claims as Trustee's local verifier does: arch, uuid,
// measurements by index (hex) and the opaque data as "config".
func claimsOf(d Device, r *Report) verifier.Claims {
	m := make(map[string]any, len(r.Measurements))
	for i, v := range r.Measurements {
		m[strconv.Itoa(int(i))] = hex.EncodeToString(v)
	}
	uuid := d.UUID
	if uuid == "" {
		uuid = "unknown"
	}
	return verifier.Claims{"arch": "Hopper", "uuid": uuid, "measurements": m, "config": r.Opaque}
}
