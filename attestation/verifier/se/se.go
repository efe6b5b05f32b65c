// Package se verifies IBM Secure Execution (s390x) attestation as Trustee's
// SE verifier does, in IBM's documented format: the verifier issues an
// attestation request (ARCB) encrypted to the host keys of verified
// host-key documents; the guest has the Ultravisor answer it with an
// HMAC-SHA512, under the request's measurement key, over the SE image
// header tags, the configuration UID, the user data (the runtime data's
// SHA-512), the request's nonce and the additional data (public host-key
// hashes). Only an Ultravisor holding one of the host keys can unpack the
// request, so a measurement that verifies comes from such a machine.
//
// Trustee's verifier is stateless: the measurement key and nonce travel
// to the guest and back RSA-encrypted to the verifier's own key. Cocoon
// seals them with AES-256-GCM under a key only the verifier holds, so
// nobody else can make a pair the verifier would accept, and binds the
// nonce to the KBS session it was issued for.
package se

import (
	"bytes"
	"context"
	"crypto/cipher"
	"crypto/ecdh"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"

	"github.com/cocoon-cc/cocoon/attestation/verifier"
)

// Options configure a Verifier.
type Options struct {
	// HostKeys are the verified host-key documents' keys the requests are
	// encrypted to (see VerifyHostKeys and LoadDir).
	HostKeys []*ecdh.PublicKey
	// Tags are the SE image's header tags (ParseHeader of hdr.bin): the
	// request carries them and the evidence must have them.
	Tags Tags
	// SealKey seals the request secrets (32 bytes). Empty: a random key,
	// so challenges do not outlive the process.
	SealKey []byte
}

// Verifier verifies SE evidence and issues the attestation requests it
// answers. It is safe for concurrent use.
type Verifier struct {
	opts  Options
	seal  cipher.AEAD
	phkhs map[string]bool
}

// New returns a Verifier.
func New(o Options) (*Verifier, error) {
	if len(o.HostKeys) == 0 {
		return nil, fmt.Errorf("%w: no host-key document", ErrConfig)
	}
	key := o.SealKey
	if len(key) == 0 {
		key = make([]byte, 32)
		rand.Read(key)
	}
	g, err := NewGCM(key)
	if err != nil {
		return nil, fmt.Errorf("%w: seal key: %v", ErrConfig, err)
	}
	v := &Verifier{opts: o, seal: g, phkhs: map[string]bool{}}
	for _, k := range o.HostKeys {
		v.phkhs[string(PHKH(k))] = true
	}
	return v, nil
}

// Labels keep a sealed measurement key from passing as a nonce.
var (
	labelKey   = []byte("cocoon se measurement key")
	labelNonce = []byte("cocoon se request nonce")
)

func (v *Verifier) sealBox(label, plain []byte) []byte {
	iv := make([]byte, v.seal.NonceSize())
	rand.Read(iv)
	return v.seal.Seal(iv, iv, plain, label)
}

func (v *Verifier) open(label, box []byte) ([]byte, error) {
	n := v.seal.NonceSize()
	if len(box) < n {
		return nil, ErrNotIssued
	}
	p, err := v.seal.Open(nil, box[:n], box[n:], label)
	if err != nil {
		return nil, ErrNotIssued
	}
	return p, nil
}

// Challenge issues an attestation request for the KBS session whose base
// nonce is base, as the JSON Trustee's KBS sends as its challenge nonce.
func (v *Verifier) Challenge(_ context.Context, base string) (string, error) {
	var s requestSecrets
	rand.Read(s.measKey[:])
	rand.Read(s.nonce[:])
	blob, err := buildRequest(v.opts.HostKeys, &s)
	if err != nil {
		return "", err
	}
	bind := sha256.Sum256([]byte(base))
	c := Challenge{
		RequestBlob: blob, MeasurementSize: MeasurementSize, AdditionalSize: AdditionalSize,
		EncrMeasurementKey: v.sealBox(labelKey, s.measKey[:]),
		EncrRequestNonce:   v.sealBox(labelNonce, append(s.nonce[:], bind[:]...)),
		ImageHdrTags:       v.opts.Tags[:],
	}
	b, err := json.Marshal(c)
	return string(b), err
}

// CheckChallenge reports whether nonce is a request Challenge issued for
// the session whose base nonce is base.
func (v *Verifier) CheckChallenge(nonce, base string) error {
	var c Challenge
	if err := json.Unmarshal([]byte(nonce), &c); err != nil {
		return fmt.Errorf("%w: %v", ErrChallenge, err)
	}
	p, err := v.open(labelNonce, c.EncrRequestNonce)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrChallenge, err)
	}
	bind := sha256.Sum256([]byte(base))
	if len(p) != nonceSize+len(bind) || !hmac.Equal(p[nonceSize:], bind[:]) {
		return ErrChallenge
	}
	return nil
}

// Evaluate implements verifier.Verifier for Trustee's SE evidence.
func (v *Verifier) Evaluate(_ context.Context, evidence json.RawMessage, want verifier.Expected) ([]verifier.TeeClaims, error) {
	var r Response
	if err := parseEvidence(evidence, &r); err != nil {
		return nil, err
	}
	return verifier.CPU(v.Verify(&r, want))
}

// Verify checks a response: the sealed secrets are this verifier's, the
// user data carries the report data, the measurement verifies, the image
// and the host key that unpacked the request are the configured ones.
// SE has no initdata field: an expected initdata digest is not checked,
// as Trustee does not.
func (v *Verifier) Verify(r *Response, want verifier.Expected) (verifier.Claims, error) {
	key, err := v.open(labelKey, r.EncrMeasurementKey)
	if err != nil {
		return nil, err
	}
	nb, err := v.open(labelNonce, r.EncrRequestNonce)
	if err != nil {
		return nil, err
	}
	if len(key) != measKeySize || len(nb) < nonceSize {
		return nil, ErrNotIssued
	}
	// The user data starts with the report data (a SHA-512 fills it).
	if want.ReportData != nil && !bytes.HasPrefix(r.UserData, want.ReportData) {
		return nil, fmt.Errorf("se: %w: user data is %x", verifier.ErrReportDataMismatch, r.UserData)
	}
	m := Measurement(key, &r.Tags, r.CUID, r.UserData, nb[:nonceSize], r.AdditionalData)
	if !hmac.Equal(m, r.Measurement) {
		return nil, ErrMeasurement
	}
	if r.Tags != v.opts.Tags {
		return nil, fmt.Errorf("%w: tag %x", ErrImageTags, r.Tags.Tag())
	}
	if len(r.AdditionalData) != AdditionalSize {
		return nil, fmt.Errorf("%w: additional data of %d bytes, want %d", ErrEvidenceJSON, len(r.AdditionalData), AdditionalSize)
	}
	imagePHKH, attestPHKH := r.AdditionalData[:phkhSize], r.AdditionalData[phkhSize:]
	if !v.phkhs[string(attestPHKH)] {
		return nil, fmt.Errorf("%w: %x", ErrAttestationKey, attestPHKH)
	}
	return claims(r, want.ReportData, imagePHKH, attestPHKH), nil
}

// claims names the verified fields as Trustee does, hex-encoded into one
// string: the report data is the prefix of the user data Verify checked.
func claims(r *Response, reportData, imagePHKH, attestPHKH []byte) verifier.Claims {
	var buf [2 * (maxUserData + cuidSize + AdditionalSize + tagSize)]byte
	parts := [...][]byte{r.UserData, r.CUID, imagePHKH, attestPHKH, r.Tags.Tag()}
	var cut [len(parts) + 1]int
	for i, p := range parts {
		cut[i+1] = cut[i] + hex.Encode(buf[cut[i]:], p)
	}
	s := string(buf[:cut[len(parts)]])
	part := func(i int) string { return s[cut[i]:cut[i+1]] }
	return verifier.Claims{
		"version":          arcbVersion,
		"cuid":             part(1),
		"report_data":      s[:2*len(reportData)],
		"image_phkh":       part(2),
		"attestation_phkh": part(3),
		"tag":              part(4),
		"user_data":        part(0),
	}
}
