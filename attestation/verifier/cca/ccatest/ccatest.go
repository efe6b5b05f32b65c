// Package ccatest issues CCA tokens for tests: a real platform token kept
// as it is, with realm tokens for new challenges signed by the realm
// attestation key the platform token vouches for (Trustee's CCA test data
// ships that key). It is the live-nonce path no captured token can take.
package ccatest

import (
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"github.com/fxamacker/cbor/v2"
	"github.com/go-jose/go-jose/v4"
	"github.com/veraison/go-cose"

	"github.com/cocoon-cc/cocoon/attestation/verifier"
	"github.com/cocoon-cc/cocoon/guest/attester/cca"
	"github.com/cocoon-cc/cocoon/protocol"
)

// CBOR labels this package rewrites.
const (
	LabelChallenge = 10
	LabelPerso     = 44235
	LabelRAK       = 44237
)

// Issuer re-issues a token's realm part.
type Issuer struct {
	// Platform is the platform token, kept byte for byte.
	Platform []byte
	// Realm are the realm claims; Token replaces the challenge and the
	// personalization value, tests may change the others.
	Realm map[int64]cbor.RawMessage
	// RAK signs the realm token.
	RAK *ecdsa.PrivateKey
	// Perso is the personalization value (initdata digest) of the realm.
	Perso []byte
}

// FromToken takes the platform token and realm claims of a CCA token.
func FromToken(token []byte, rak *ecdsa.PrivateKey) (*Issuer, error) {
	var tag cbor.RawTag
	if err := cbor.Unmarshal(token, &tag); err != nil {
		return nil, err
	}
	var coll map[int64][]byte
	if err := cbor.Unmarshal(tag.Content, &coll); err != nil {
		return nil, err
	}
	var realm cose.Sign1Message
	if err := realm.UnmarshalCBOR(coll[44241]); err != nil {
		return nil, err
	}
	i := &Issuer{Platform: coll[44234], RAK: rak}
	if err := cbor.Unmarshal(realm.Payload, &i.Realm); err != nil {
		return nil, err
	}
	if err := cbor.Unmarshal(i.Realm[LabelPerso], &i.Perso); err != nil {
		return nil, err
	}
	return i, nil
}

// FromTrustee takes Trustee's example token and RAK from its CCA test
// data directory (deps/verifier/test_data/cca).
func FromTrustee(dir string) (*Issuer, error) {
	rak, err := LoadKey(filepath.Join(dir, "misc/rak-priv.json"))
	if err != nil {
		return nil, err
	}
	token, err := os.ReadFile(filepath.Join(dir, "misc/cca-example-token.cbor"))
	if err != nil {
		return nil, err
	}
	return FromToken(token, rak)
}

// ResignPlatform replaces the platform token's challenge (the hash of the
// RAK it vouches for) and signs it again with the platform's CPAK.
func (i *Issuer) ResignPlatform(cpak *ecdsa.PrivateKey, challenge []byte) error {
	var msg cose.Sign1Message
	if err := msg.UnmarshalCBOR(i.Platform); err != nil {
		return err
	}
	var claims map[int64]cbor.RawMessage
	if err := cbor.Unmarshal(msg.Payload, &claims); err != nil {
		return err
	}
	var err error
	if claims[LabelChallenge], err = cbor.Marshal(challenge); err != nil {
		return err
	}
	if i.Platform, err = sign(cpak, claims); err != nil {
		return err
	}
	return nil
}

// sign is a tagged COSE_Sign1 message of claims, signed ES384 by key.
func sign(key *ecdsa.PrivateKey, claims map[int64]cbor.RawMessage) ([]byte, error) {
	payload, err := cbor.Marshal(claims)
	if err != nil {
		return nil, err
	}
	signer, err := cose.NewSigner(cose.AlgorithmES384, key)
	if err != nil {
		return nil, err
	}
	msg := cose.NewSign1Message()
	msg.Headers.Protected.SetAlgorithm(cose.AlgorithmES384)
	msg.Payload = payload
	if err := msg.Sign(rand.Reader, nil, signer); err != nil {
		return nil, err
	}
	return msg.MarshalCBOR()
}

// Token is a CCA token whose realm challenge is challenge (64 bytes).
func (i *Issuer) Token(challenge []byte) ([]byte, error) {
	claims := make(map[int64]cbor.RawMessage, len(i.Realm))
	for k, v := range i.Realm {
		claims[k] = v
	}
	var err error
	if claims[LabelChallenge], err = cbor.Marshal(challenge); err != nil {
		return nil, err
	}
	if claims[LabelPerso], err = cbor.Marshal(i.Perso); err != nil {
		return nil, err
	}
	realm, err := sign(i.RAK, claims)
	if err != nil {
		return nil, err
	}
	return cbor.Marshal(cbor.Tag{Number: 399, Content: map[int64][]byte{44234: i.Platform, 44241: realm}})
}

// Evidence is the token as guest-components' CCA attester sends it.
func Evidence(token []byte) json.RawMessage { return cca.EncodeEvidence(token) }

// Attester is an attester.Attester that answers with re-issued tokens.
type Attester struct{ *Issuer }

// Tee is cca.
func (Attester) Tee() protocol.Tee { return protocol.TeeCCA }

// Evidence re-issues the token for the report data, zero-padded to the
// realm challenge's 64 bytes as guest-components pads it.
func (a Attester) Evidence(_ context.Context, reportData []byte) (json.RawMessage, error) {
	if len(reportData) > 64 {
		return nil, fmt.Errorf("ccatest: report data of %d bytes", len(reportData))
	}
	tok, err := a.Token(verifier.Fit(reportData, 64))
	if err != nil {
		return nil, err
	}
	return Evidence(tok), nil
}

// LoadKey reads an EC private key in JWK form (as the fixture's
// rak-priv.json and cpak-priv.json).
func LoadKey(path string) (*ecdsa.PrivateKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var k jose.JSONWebKey
	if err := json.Unmarshal(b, &k); err != nil {
		return nil, err
	}
	pk, ok := k.Key.(*ecdsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("ccatest: %s is not an EC private key", path)
	}
	return pk, nil
}
