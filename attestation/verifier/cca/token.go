package cca

import (
	"fmt"

	"github.com/fxamacker/cbor/v2"
	"github.com/veraison/go-cose"
)

// CBOR labels of the CCA attestation token (Arm RMM specification, A.7,
// and the IETF draft "Arm's Platform Security Architecture (PSA)
// Attestation Token" for the platform claims).
const (
	collectionTag = 399
	platformLabel = 44234
	realmLabel    = 44241

	// PlatformProfileLegacy and PlatformProfile name the platform
	// claims-set's profile; the claims are laid out the same in both.
	PlatformProfileLegacy = "http://arm.com/CCA-SSD/1.0.0"
	PlatformProfile       = "tag:arm.com,2023:cca_platform#1.0.0"
	// RealmProfile marks a realm token whose RAK is a COSE_Key; without a
	// profile the RAK is a raw uncompressed P-384 point.
	RealmProfile = "tag:arm.com,2023:realm#1.0.0"

	// maxTokenSize bounds what is decoded: real tokens are 1-3 KiB.
	maxTokenSize = 64 << 10
)

// Token is a decoded CCA attestation token: both signed messages and their
// claims, nothing verified yet.
type Token struct {
	// PlatformRaw is the platform token's encoding.
	PlatformRaw     []byte
	PlatformMessage *cose.Sign1Message
	RealmMessage    *cose.Sign1Message
	Platform        PlatformClaims
	Realm           RealmClaims
}

// PlatformClaims is the CCA platform claims-set.
type PlatformClaims struct {
	Profile          string        `cbor:"265,keyasint"`
	Challenge        []byte        `cbor:"10,keyasint"`
	ImplementationID []byte        `cbor:"2396,keyasint"`
	InstanceID       []byte        `cbor:"256,keyasint"`
	Config           []byte        `cbor:"2401,keyasint"`
	Lifecycle        *uint16       `cbor:"2395,keyasint"`
	SwComponents     []SwComponent `cbor:"2399,keyasint"`
	ServiceIndicator *string       `cbor:"2400,keyasint"`
	HashAlgorithm    string        `cbor:"2402,keyasint"`
}

// SwComponent is one measured firmware component of the platform.
type SwComponent struct {
	Type          *string `cbor:"1,keyasint,omitempty"`
	Value         []byte  `cbor:"2,keyasint"`
	Version       *string `cbor:"4,keyasint,omitempty"`
	SignerID      []byte  `cbor:"5,keyasint"`
	HashAlgorithm *string `cbor:"6,keyasint,omitempty"`
}

// RealmClaims is the CCA realm claims-set.
type RealmClaims struct {
	Profile                *string  `cbor:"265,keyasint"`
	Challenge              []byte   `cbor:"10,keyasint"`
	PersonalizationValue   []byte   `cbor:"44235,keyasint"`
	InitialMeasurement     []byte   `cbor:"44238,keyasint"`
	ExtensibleMeasurements [][]byte `cbor:"44239,keyasint"`
	HashAlgorithm          string   `cbor:"44236,keyasint"`
	PublicKey              []byte   `cbor:"44237,keyasint"`
	PublicKeyHashAlgorithm string   `cbor:"44240,keyasint"`
}

var (
	// decMode refuses duplicate keys and indefinite lengths: a claim
	// must have exactly one, definite, encoding.
	decMode = mustDecMode(cbor.DecOptions{
		DupMapKey:        cbor.DupMapKeyEnforcedAPF,
		IndefLength:      cbor.IndefLengthForbidden,
		MaxNestedLevels:  16,
		MaxArrayElements: 1024,
		MaxMapPairs:      1024,
	})
	// strictMode also refuses unknown keys, for the structures whose every
	// key is defined (the collection, software components).
	strictMode = mustDecMode(cbor.DecOptions{
		DupMapKey:         cbor.DupMapKeyEnforcedAPF,
		IndefLength:       cbor.IndefLengthForbidden,
		MaxNestedLevels:   16,
		MaxArrayElements:  1024,
		MaxMapPairs:       1024,
		ExtraReturnErrors: cbor.ExtraDecErrorUnknownField,
	})
)

func mustDecMode(o cbor.DecOptions) cbor.DecMode {
	m, err := o.DecMode()
	if err != nil {
		panic(err) // constant options
	}
	return m
}

// ParseToken decodes a CBOR CCA token without verifying it.
func ParseToken(b []byte) (*Token, error) {
	if len(b) > maxTokenSize {
		return nil, fmt.Errorf("%w: %d bytes", ErrCollection, len(b))
	}
	var tag cbor.RawTag
	if err := decMode.Unmarshal(b, &tag); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCollection, err)
	}
	if tag.Number != collectionTag {
		return nil, fmt.Errorf("%w: tag %d, want %d", ErrCollection, tag.Number, collectionTag)
	}
	var coll struct {
		Platform []byte `cbor:"44234,keyasint"`
		Realm    []byte `cbor:"44241,keyasint"`
	}
	if err := strictMode.Unmarshal(tag.Content, &coll); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCollection, err)
	}
	if len(coll.Platform) == 0 || len(coll.Realm) == 0 {
		return nil, fmt.Errorf("%w: platform and realm tokens are both required", ErrCollection)
	}
	t := &Token{PlatformRaw: coll.Platform}
	var err error
	if t.PlatformMessage, err = parseSign1(coll.Platform, "platform"); err != nil {
		return nil, err
	}
	if t.RealmMessage, err = parseSign1(coll.Realm, "realm"); err != nil {
		return nil, err
	}
	if err := t.Platform.decode(t.PlatformMessage.Payload); err != nil {
		return nil, err
	}
	if err := t.Realm.decode(t.RealmMessage.Payload); err != nil {
		return nil, err
	}
	return t, nil
}

// parseSign1 decodes a tagged COSE_Sign1 message (the form both CCA
// tokens take) whose payload is attached.
func parseSign1(b []byte, which string) (*cose.Sign1Message, error) {
	var m cose.Sign1Message
	if err := m.UnmarshalCBOR(b); err != nil {
		return nil, fmt.Errorf("%w: %s token: %v", ErrCOSE, which, err)
	}
	if len(m.Payload) == 0 {
		return nil, fmt.Errorf("%w: %s token has no payload", ErrCOSE, which)
	}
	if _, err := m.Headers.Protected.Algorithm(); err != nil {
		return nil, fmt.Errorf("%w: %s token: %v", ErrCOSE, which, err)
	}
	return &m, nil
}

func (p *PlatformClaims) decode(b []byte) error {
	// Software components are decoded strictly, one by one.
	var raw struct {
		PlatformClaims
		SwComponents []cbor.RawMessage `cbor:"2399,keyasint"`
	}
	if err := decMode.Unmarshal(b, &raw); err != nil {
		return fmt.Errorf("%w: %v", ErrPlatformClaims, err)
	}
	*p = raw.PlatformClaims
	p.SwComponents = make([]SwComponent, len(raw.SwComponents))
	for i, c := range raw.SwComponents {
		if err := strictMode.Unmarshal(c, &p.SwComponents[i]); err != nil {
			return fmt.Errorf("%w: sw-component %d: %v", ErrPlatformClaims, i, err)
		}
	}
	return p.validate()
}

func (p *PlatformClaims) validate() error {
	switch {
	case p.Profile != PlatformProfile && p.Profile != PlatformProfileLegacy:
		return fmt.Errorf("%w: profile %q", ErrPlatformClaims, p.Profile)
	case !measurementSize(len(p.Challenge)):
		return fmt.Errorf("%w: challenge of %d bytes", ErrPlatformClaims, len(p.Challenge))
	case len(p.ImplementationID) != 32:
		return fmt.Errorf("%w: implementation id of %d bytes", ErrPlatformClaims, len(p.ImplementationID))
	case len(p.InstanceID) != 33:
		return fmt.Errorf("%w: instance id of %d bytes", ErrPlatformClaims, len(p.InstanceID))
	case p.Config == nil:
		return fmt.Errorf("%w: config missing", ErrPlatformClaims)
	case p.Lifecycle == nil || !lifecycleValid(*p.Lifecycle):
		return fmt.Errorf("%w: lifecycle missing or unknown", ErrPlatformClaims)
	case len(p.SwComponents) == 0:
		return fmt.Errorf("%w: no sw-components", ErrPlatformClaims)
	case !hashAlg(p.HashAlgorithm):
		return fmt.Errorf("%w: hash algorithm %q", ErrPlatformClaims, p.HashAlgorithm)
	}
	for i, c := range p.SwComponents {
		if !measurementSize(len(c.Value)) || len(c.SignerID) == 0 {
			return fmt.Errorf("%w: sw-component %d: measurement and signer id required", ErrPlatformClaims, i)
		}
		if c.HashAlgorithm != nil && !hashAlg(*c.HashAlgorithm) {
			return fmt.Errorf("%w: sw-component %d: hash algorithm %q", ErrPlatformClaims, i, *c.HashAlgorithm)
		}
	}
	return nil
}

func (r *RealmClaims) decode(b []byte) error {
	if err := decMode.Unmarshal(b, r); err != nil {
		return fmt.Errorf("%w: %v", ErrRealmClaims, err)
	}
	switch {
	case r.Profile != nil && *r.Profile != RealmProfile:
		return fmt.Errorf("%w: profile %q", ErrRealmClaims, *r.Profile)
	case len(r.Challenge) != 64:
		return fmt.Errorf("%w: challenge of %d bytes", ErrRealmClaims, len(r.Challenge))
	case len(r.PersonalizationValue) != 64:
		return fmt.Errorf("%w: personalization value of %d bytes", ErrRealmClaims, len(r.PersonalizationValue))
	case !measurementSize(len(r.InitialMeasurement)):
		return fmt.Errorf("%w: initial measurement of %d bytes", ErrRealmClaims, len(r.InitialMeasurement))
	case len(r.ExtensibleMeasurements) != 4:
		return fmt.Errorf("%w: %d extensible measurements, want 4", ErrRealmClaims, len(r.ExtensibleMeasurements))
	case !hashAlg(r.HashAlgorithm):
		return fmt.Errorf("%w: hash algorithm %q", ErrRealmClaims, r.HashAlgorithm)
	case !hashAlg(r.PublicKeyHashAlgorithm):
		return fmt.Errorf("%w: public key hash algorithm %q", ErrRealmClaims, r.PublicKeyHashAlgorithm)
	case len(r.PublicKey) == 0:
		return fmt.Errorf("%w: public key missing", ErrRealmClaims)
	}
	for i, m := range r.ExtensibleMeasurements {
		if !measurementSize(len(m)) {
			return fmt.Errorf("%w: extensible measurement %d of %d bytes", ErrRealmClaims, i, len(m))
		}
	}
	return nil
}

func measurementSize(n int) bool { return n == 32 || n == 48 || n == 64 }

// hashAlg: the RMM specification allows these two only.
func hashAlg(s string) bool { return s == "sha-256" || s == "sha-512" }

// lifecycleValid: the PSA security lifecycle states, each a major state in
// the high byte with an implementation-defined low byte.
func lifecycleValid(v uint16) bool { return v>>8 == 0 || (v>>12 <= 6 && v&0x0f00 == 0) }
