// Package cca verifies Arm CCA attestation tokens as Trustee's local CCA
// verifier does: the platform token signed by the platform's CPAK (from a
// trust anchor store), the realm token signed by the realm attestation key
// (RAK), the RAK's hash as the platform token's challenge, the platform's
// firmware and configuration against a reference value store, and the
// realm challenge against the expected report data. Claims are named as
// Trustee names them.
package cca

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/json"
	"fmt"

	"github.com/veraison/go-cose"

	"github.com/cocoon-cc/cocoon/attestation/verifier"
)

// Evidence is what guest-components' CCA attester sends: the CBOR token,
// as a JSON array of byte values (serde's form of a byte vector). A base64
// string is accepted too.
type Evidence struct {
	Token []byte `json:"token"`
}

// Options configure the verifier.
type Options struct {
	// TrustAnchors are the known platforms' CPAKs; a token from a platform
	// not listed is refused.
	TrustAnchors TrustAnchors
	// ReferenceValues are the acceptable platform (and optionally realm)
	// states; a platform matching none is refused.
	ReferenceValues *ReferenceValues
}

// Verifier implements verifier.Verifier for Arm CCA.
type Verifier struct {
	opts Options
	// platforms are the platform tokens whose signature verified, by
	// SHA-256: a platform signs one token per boot (its challenge is the
	// hash of the RAK) and every realm on it sends that token.
	platforms *verifier.Cache[[32]byte, struct{}]
}

// maxPlatforms bounds the verified platform token cache.
const maxPlatforms = 4096

// New returns a CCA verifier.
func New(o Options) *Verifier {
	return &Verifier{opts: o, platforms: verifier.NewCache[[32]byte, struct{}](maxPlatforms)}
}

// Evaluate verifies CCA evidence and returns its claims, device class cpu.
func (v *Verifier) Evaluate(_ context.Context, raw json.RawMessage, want verifier.Expected) ([]verifier.TeeClaims, error) {
	var ev Evidence
	if err := verifier.DecodeStrict(raw, &ev); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrEvidenceJSON, err)
	}
	if len(ev.Token) == 0 {
		return nil, fmt.Errorf("%w: token missing", ErrEvidenceJSON)
	}
	return verifier.CPU(v.VerifyToken(ev.Token, want))
}

// VerifyToken verifies a CBOR CCA token; each check fails with its own error.
func (v *Verifier) VerifyToken(b []byte, want verifier.Expected) (verifier.Claims, error) {
	t, err := ParseToken(b)
	if err != nil {
		return nil, err
	}
	if err := v.verifySignatures(t); err != nil {
		return nil, err
	}
	if v.opts.ReferenceValues == nil {
		return nil, fmt.Errorf("%w: no reference value store configured", ErrNoPlatformReference)
	}
	if err := v.opts.ReferenceValues.appraisePlatform(&t.Platform); err != nil {
		return nil, err
	}
	if err := v.opts.ReferenceValues.appraiseRealm(&t.Realm); err != nil {
		return nil, err
	}
	if err := verifier.CheckReportData(t.Realm.Challenge, want.ReportData); err != nil {
		return nil, err
	}
	if err := verifier.CheckInitData(t.Realm.PersonalizationValue, want.InitDataDigest); err != nil {
		return nil, err
	}
	return claimsOf(t), nil
}

// verifySignatures checks the platform token with its CPAK, the realm token
// with its RAK, and that the platform vouches for that RAK.
func (v *Verifier) verifySignatures(t *Token) error {
	if len(v.opts.TrustAnchors) == 0 {
		return ErrNoTrustAnchors
	}
	cpak, ok := v.opts.TrustAnchors[string(t.Platform.InstanceID)]
	if !ok {
		return fmt.Errorf("%w: %x", ErrUnknownPlatform, t.Platform.InstanceID)
	}
	if cpak.Denied != "" {
		return fmt.Errorf("%w: %s", ErrRevokedCPAK, cpak.Denied)
	}
	if !bytes.Equal(cpak.ImplementationID, t.Platform.ImplementationID) {
		return ErrImplementationMismatch
	}
	if err := v.verifyPlatform(t, cpak.Key); err != nil {
		return err
	}
	rak, err := t.Realm.rak()
	if err != nil {
		return err
	}
	if err := verifySign1(t.RealmMessage, rak); err != nil {
		return fmt.Errorf("%w: %v", ErrRealmSignature, err)
	}
	if !bytes.Equal(hashOf(t.Realm.PublicKeyHashAlgorithm, t.Realm.PublicKey), t.Platform.Challenge) {
		return ErrRAKBinding
	}
	return nil
}

// verifyPlatform checks the platform token's signature, once per token.
func (v *Verifier) verifyPlatform(t *Token, cpak *ecdsa.PublicKey) error {
	key := sha256.Sum256(t.PlatformRaw)
	if _, ok := v.platforms.Get(key); ok {
		return nil
	}
	if err := verifySign1(t.PlatformMessage, cpak); err != nil {
		return fmt.Errorf("%w: %v", ErrPlatformSignature, err)
	}
	v.platforms.Put(key, struct{}{})
	return nil
}

// verifySign1 checks a message with key, the algorithm following the key's
// curve: a header naming another algorithm is refused by go-cose.
func verifySign1(m *cose.Sign1Message, key *ecdsa.PublicKey) error {
	var alg cose.Algorithm
	switch key.Curve {
	case elliptic.P256():
		alg = cose.AlgorithmES256
	case elliptic.P384():
		alg = cose.AlgorithmES384
	case elliptic.P521():
		alg = cose.AlgorithmES512
	default:
		return fmt.Errorf("unsupported curve %s", key.Curve.Params().Name)
	}
	cv, err := cose.NewVerifier(alg, key)
	if err != nil {
		return err
	}
	return m.Verify(nil, cv)
}

// rak is the realm attestation key: a COSE_Key under the realm profile, a
// raw uncompressed P-384 point before it.
func (r *RealmClaims) rak() (*ecdsa.PublicKey, error) {
	if r.Profile == nil {
		k, err := ecdsa.ParseUncompressedPublicKey(elliptic.P384(), r.PublicKey)
		if err != nil {
			return nil, fmt.Errorf("%w: public key: %v", ErrRealmClaims, err)
		}
		return k, nil
	}
	var k cose.Key
	if err := decMode.Unmarshal(r.PublicKey, &k); err != nil {
		return nil, fmt.Errorf("%w: public key COSE_Key: %v", ErrRealmClaims, err)
	}
	pub, err := k.PublicKey()
	if err != nil {
		return nil, fmt.Errorf("%w: public key COSE_Key: %v", ErrRealmClaims, err)
	}
	ek, ok := pub.(*ecdsa.PublicKey)
	if !ok {
		return nil, fmt.Errorf("%w: public key is not an EC key", ErrRealmClaims)
	}
	return ek, nil
}

// hashOf hashes with one of the two algorithms the claims allow (checked
// when they were decoded).
func hashOf(alg string, b []byte) []byte {
	if alg == "sha-512" {
		s := sha512.Sum512(b)
		return s[:]
	}
	s := sha256.Sum256(b)
	return s[:]
}
