package cca

import (
	"bytes"
	"crypto/ecdsa"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"github.com/go-jose/go-jose/v4"

	"github.com/cocoon-cc/cocoon/attestation/verifier"
)

// The stores use the JSON forms of Veraison's ccatoken crate, which
// Trustee's local CCA verifier loads ("ta-store" and "rv-store"): lists of
// CPAKs, and platform and realm reference values, binary fields in hex.

// TrustAnchors are the CPAKs of known platforms, by instance id.
type TrustAnchors map[string]CPAK

// CPAK is a platform's attestation public key and the identities it
// belongs to.
type CPAK struct {
	ImplementationID []byte
	InstanceID       []byte
	Key              *ecdsa.PublicKey
	// Denied is the store's "x-reason" ("revoked", "insecure",
	// "obsolete"): tokens signed by this CPAK are refused.
	Denied string
}

// ReferenceValues are the acceptable platform states (by implementation
// id) and realm states.
type ReferenceValues struct {
	Platforms map[string][]PlatformReference
	Realms    []RealmReference
}

// PlatformReference is one acceptable platform state: its configuration
// and every firmware component, in order.
type PlatformReference struct {
	Config       []byte
	SwComponents []SwReference
	// Denied is the store's "x-reason": a platform in this state is
	// refused, whatever other entries accept.
	Denied string
}

// SwReference is a firmware component's reference; the type and version are
// compared only when given.
type SwReference struct {
	Type     *string
	Value    []byte
	SignerID []byte
	Version  *string
}

// RealmReference is one acceptable realm: its initial measurement and,
// when given, its extensible measurements. The personalization value is
// the store's too but not compared, as in ccatoken: it carries the
// initdata digest, which is bound on its own.
type RealmReference struct {
	InitialMeasurement     []byte
	ExtensibleMeasurements [][]byte
}

// Store file names in a directory given as the verifier's store, as in
// Trustee's CCA test configuration.
const (
	TrustAnchorFile     = "tastore.json"
	ReferenceValuesFile = "rvstore.json"
)

// LoadDir reads tastore.json and, when present, rvstore.json from dir.
func LoadDir(dir string) (TrustAnchors, *ReferenceValues, error) {
	tb, err := os.ReadFile(filepath.Join(dir, TrustAnchorFile))
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %v", ErrStore, err)
	}
	ta, err := ParseTrustAnchors(tb)
	if err != nil {
		return nil, nil, err
	}
	rb, err := os.ReadFile(filepath.Join(dir, ReferenceValuesFile))
	if os.IsNotExist(err) {
		return ta, nil, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %v", ErrStore, err)
	}
	rv, err := ParseReferenceValues(rb)
	if err != nil {
		return nil, nil, err
	}
	return ta, rv, nil
}

// hexBytes is a JSON string of hex digits.
type hexBytes []byte

func (h *hexBytes) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	v, err := hex.DecodeString(s)
	if err != nil {
		return err
	}
	*h = v
	return nil
}

// ParseTrustAnchors reads a trust anchor store: a list of
// {"pkey": <EC JWK>, "implementation-id": hex, "instance-id": hex}.
func ParseTrustAnchors(b []byte) (TrustAnchors, error) {
	var entries []struct {
		PKey             jose.JSONWebKey `json:"pkey"`
		ImplementationID hexBytes        `json:"implementation-id"`
		InstanceID       hexBytes        `json:"instance-id"`
		XReason          string          `json:"x-reason"`
	}
	if err := verifier.DecodeStrict(b, &entries); err != nil {
		return nil, fmt.Errorf("%w: trust anchors: %v", ErrStore, err)
	}
	ta := make(TrustAnchors, len(entries))
	for i, e := range entries {
		key, ok := e.PKey.Key.(*ecdsa.PublicKey)
		if !ok || !e.PKey.Valid() {
			return nil, fmt.Errorf("%w: trust anchor %d: pkey is not an EC public key", ErrStore, i)
		}
		if len(e.ImplementationID) != 32 || len(e.InstanceID) != 33 {
			return nil, fmt.Errorf("%w: trust anchor %d: implementation id (32 bytes) and instance id (33 bytes) required", ErrStore, i)
		}
		ta[string(e.InstanceID)] = CPAK{ImplementationID: e.ImplementationID, InstanceID: e.InstanceID, Key: key, Denied: e.XReason}
	}
	return ta, nil
}

// ParseReferenceValues reads a reference value store:
// {"platform": [...], "realm": [...]}.
func ParseReferenceValues(b []byte) (*ReferenceValues, error) {
	var doc struct {
		Platform []struct {
			ImplementationID hexBytes `json:"implementation-id"`
			Config           hexBytes `json:"platform-configuration"`
			XReason          string   `json:"x-reason"`
			SwComponents     []struct {
				Type     *string  `json:"component-type"`
				Value    hexBytes `json:"measurement-value"`
				SignerID hexBytes `json:"signer-id"`
				Version  *string  `json:"version"`
			} `json:"sw-components"`
		} `json:"platform"`
		Realm []struct {
			InitialMeasurement     hexBytes   `json:"initial-measurement"`
			ExtensibleMeasurements []hexBytes `json:"extensible-measurements"`
			PersonalizationValue   hexBytes   `json:"personalization-value"`
			RAKHashAlgorithm       string     `json:"rak-hash-algorithm"`
		} `json:"realm"`
	}
	if err := verifier.DecodeStrict(b, &doc); err != nil {
		return nil, fmt.Errorf("%w: reference values: %v", ErrStore, err)
	}
	rv := &ReferenceValues{Platforms: map[string][]PlatformReference{}}
	for i, p := range doc.Platform {
		if len(p.ImplementationID) != 32 || len(p.SwComponents) == 0 {
			return nil, fmt.Errorf("%w: platform reference %d: implementation id and sw-components required", ErrStore, i)
		}
		ref := PlatformReference{Config: p.Config, Denied: p.XReason}
		for _, c := range p.SwComponents {
			ref.SwComponents = append(ref.SwComponents, SwReference{Type: c.Type, Value: c.Value, SignerID: c.SignerID, Version: c.Version})
		}
		rv.Platforms[string(p.ImplementationID)] = append(rv.Platforms[string(p.ImplementationID)], ref)
	}
	for i, r := range doc.Realm {
		if len(r.InitialMeasurement) == 0 || (len(r.ExtensibleMeasurements) != 0 && len(r.ExtensibleMeasurements) != 4) {
			return nil, fmt.Errorf("%w: realm reference %d: initial measurement and 0 or 4 extensible measurements required", ErrStore, i)
		}
		ref := RealmReference{InitialMeasurement: r.InitialMeasurement}
		for _, m := range r.ExtensibleMeasurements {
			ref.ExtensibleMeasurements = append(ref.ExtensibleMeasurements, m)
		}
		rv.Realms = append(rv.Realms, ref)
	}
	return rv, nil
}

// appraisePlatform finds a reference state equal to the platform's.
func (rv *ReferenceValues) appraisePlatform(p *PlatformClaims) error {
	refs, ok := rv.Platforms[string(p.ImplementationID)]
	if !ok {
		return fmt.Errorf("%w: %x", ErrNoPlatformReference, p.ImplementationID)
	}
	accepted := false
	for _, ref := range refs {
		switch {
		case !ref.matches(p):
		case ref.Denied != "":
			return fmt.Errorf("%w: %s", ErrDeniedPlatform, ref.Denied)
		default:
			accepted = true
		}
	}
	if !accepted {
		return ErrPlatformReference
	}
	return nil
}

func (ref PlatformReference) matches(p *PlatformClaims) bool {
	if !bytes.Equal(ref.Config, p.Config) || len(ref.SwComponents) != len(p.SwComponents) {
		return false
	}
	for i, r := range ref.SwComponents {
		c := p.SwComponents[i]
		if !bytes.Equal(r.Value, c.Value) || !bytes.Equal(r.SignerID, c.SignerID) ||
			!optionalEqual(r.Type, c.Type) || !optionalEqual(r.Version, c.Version) {
			return false
		}
	}
	return true
}

// optionalEqual: a reference's absent field matches anything.
func optionalEqual(ref, got *string) bool {
	return ref == nil || (got != nil && *ref == *got)
}

// appraiseRealm: with no realm references the policy alone judges the
// realm; with some, the realm must be one of them.
func (rv *ReferenceValues) appraiseRealm(r *RealmClaims) error {
	if len(rv.Realms) == 0 {
		return nil
	}
	for _, ref := range rv.Realms {
		if ref.matches(r) {
			return nil
		}
	}
	return ErrRealmReference
}

func (ref RealmReference) matches(r *RealmClaims) bool {
	if !bytes.Equal(ref.InitialMeasurement, r.InitialMeasurement) {
		return false
	}
	for i, m := range ref.ExtensibleMeasurements {
		if !bytes.Equal(m, r.ExtensibleMeasurements[i]) {
			return false
		}
	}
	return true
}
