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
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"sync"

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
	opts Options
	seal cipher.AEAD
	// phkhs are the host keys' hashes, each with its claim (hex).
	phkhs map[string]any
	// tag is the tag claim of the configured image.
	tag any
	// decoders are reused by Evaluate: what they decoded is not needed
	// once the claims are made.
	decoders sync.Pool
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
	// The claims that can only take these values are made once.
	v := &Verifier{opts: o, seal: g, phkhs: map[string]any{}, tag: hex.EncodeToString(o.Tags.Tag())}
	tagsText := base64.StdEncoding.EncodeToString(o.Tags[:])
	v.decoders.New = func() any { return &decoder{tags: &v.opts.Tags, tagsText: tagsText} }
	for _, k := range o.HostKeys {
		h := PHKH(k)
		v.phkhs[string(h)] = hex.EncodeToString(h)
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
	d := v.decoders.Get().(*decoder)
	defer v.release(d)
	var r Response
	if err := parseEvidence(evidence, &r, d); err != nil {
		return nil, err
	}
	return verifier.CPU(v.Verify(&r, want))
}

// release returns d to the pool, without a buffer grown by unusually
// large evidence.
func (v *Verifier) release(d *decoder) {
	if cap(d.buf) > maxKept {
		d.buf = nil
	}
	v.decoders.Put(d)
}

// maxKept bounds the buffers decoders keep: evidence of the sizes the
// Ultravisor answers with takes about 350 bytes.
const maxKept = 4096

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
	// Tags of another image are refused whatever the measurement; the
	// configured ones are measured (r's would escape to the heap).
	if r.Tags != v.opts.Tags {
		tags := r.Tags
		return nil, fmt.Errorf("%w: tag %x", ErrImageTags, tags.Tag())
	}
	m := Measurement(key, &v.opts.Tags, r.CUID, r.UserData, nb[:nonceSize], r.AdditionalData)
	if !hmac.Equal(m, r.Measurement) {
		return nil, ErrMeasurement
	}
	if len(r.AdditionalData) != AdditionalSize {
		return nil, fmt.Errorf("%w: additional data of %d bytes, want %d", ErrEvidenceJSON, len(r.AdditionalData), AdditionalSize)
	}
	attestPHKH := r.AdditionalData[phkhSize:]
	attestClaim, ok := v.phkhs[string(attestPHKH)]
	if !ok {
		return nil, fmt.Errorf("%w: %x", ErrAttestationKey, attestPHKH)
	}
	return v.claims(r, len(want.ReportData), attestClaim), nil
}

// claims names the verified fields as Trustee does, in hex. Those that
// can only be the configured host keys' or image's are made once, in New;
// the user data start with the report data Verify checked, so one string
// holds both, and the CUID.
func (v *Verifier) claims(r *Response, reportData int, attestClaim any) verifier.Claims {
	imagePHKH := r.AdditionalData[:phkhSize]
	imageClaim, ok := v.phkhs[string(imagePHKH)]
	if !ok {
		imageClaim = hex.EncodeToString(imagePHKH)
	}
	var buf [2 * (maxUserData + cuidSize)]byte
	n := hex.Encode(buf[:], r.UserData)
	hex.Encode(buf[n:], r.CUID)
	s := string(buf[:n+2*len(r.CUID)])
	return verifier.Claims{
		"version":          arcbVersion,
		"cuid":             s[n:],
		"report_data":      s[:2*reportData],
		"image_phkh":       imageClaim,
		"attestation_phkh": attestClaim,
		"tag":              v.tag,
		"user_data":        s[:n],
	}
}
