package tpm

import (
	"crypto"
	"errors"
	"fmt"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

// AKAlgorithm picks the kind of AK the attester creates.
type AKAlgorithm int

const (
	// AKRSA is RSA-2048 signing RSASSA-PKCS1-v1_5 with SHA-256, the AK
	// guest-components provisions and the only one Trustee verifies.
	AKRSA AKAlgorithm = iota
	// AKECC is NIST P-256 signing ECDSA with SHA-256. Cocoon verifies it;
	// Trustee does not.
	AKECC
)

// DefaultAKHandle is where guest-components looks for the AK.
const DefaultAKHandle = 0x81010002

// ErrNotAK reports a persistent key that is not a restricted signing key
// bound to the TPM: its quotes would prove nothing.
var ErrNotAK = errors.New("tpm: persistent key is not an attestation key")

// ak is a loaded attestation key.
type ak struct {
	handle tpm2.NamedHandle
	public crypto.PublicKey
}

// akAttributes are those of a TCG attestation key: it signs only data the
// TPM generated (restricted) and never leaves this TPM.
var akAttributes = tpm2.TPMAObject{
	FixedTPM:            true,
	FixedParent:         true,
	SensitiveDataOrigin: true,
	UserWithAuth:        true,
	Restricted:          true,
	SignEncrypt:         true,
}

func akTemplate(alg AKAlgorithm) (tpm2.TPMTPublic, error) {
	switch alg {
	case AKRSA:
		return tpm2.TPMTPublic{
			Type:             tpm2.TPMAlgRSA,
			NameAlg:          tpm2.TPMAlgSHA256,
			ObjectAttributes: akAttributes,
			Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgRSA, &tpm2.TPMSRSAParms{
				Scheme: tpm2.TPMTRSAScheme{
					Scheme:  tpm2.TPMAlgRSASSA,
					Details: tpm2.NewTPMUAsymScheme(tpm2.TPMAlgRSASSA, &tpm2.TPMSSigSchemeRSASSA{HashAlg: tpm2.TPMAlgSHA256}),
				},
				KeyBits: 2048,
			}),
			Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgRSA, &tpm2.TPM2BPublicKeyRSA{}),
		}, nil
	case AKECC:
		return tpm2.TPMTPublic{
			Type:             tpm2.TPMAlgECC,
			NameAlg:          tpm2.TPMAlgSHA256,
			ObjectAttributes: akAttributes,
			Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgECC, &tpm2.TPMSECCParms{
				Scheme: tpm2.TPMTECCScheme{
					Scheme:  tpm2.TPMAlgECDSA,
					Details: tpm2.NewTPMUAsymScheme(tpm2.TPMAlgECDSA, &tpm2.TPMSSigSchemeECDSA{HashAlg: tpm2.TPMAlgSHA256}),
				},
				CurveID: tpm2.TPMECCNistP256,
			}),
			Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{}),
		}, nil
	}
	return tpm2.TPMTPublic{}, fmt.Errorf("tpm: unknown AK algorithm %d", alg)
}

// loadAK reads the AK at handle, creating and persisting it there first if
// the handle is empty.
func loadAK(t transport.TPM, handle tpm2.TPMHandle, alg AKAlgorithm) (*ak, error) {
	rsp, err := tpm2.ReadPublic{ObjectHandle: handle}.Execute(t)
	if errors.Is(err, tpm2.TPMRCHandle) {
		if err := createAK(t, handle, alg); err != nil {
			return nil, err
		}
		rsp, err = tpm2.ReadPublic{ObjectHandle: handle}.Execute(t)
	}
	if err != nil {
		return nil, fmt.Errorf("tpm: read AK %#x: %w", handle, err)
	}
	pub, err := rsp.OutPublic.Contents()
	if err != nil {
		return nil, fmt.Errorf("tpm: AK %#x public area: %w", handle, err)
	}
	attrs := pub.ObjectAttributes
	if !attrs.Restricted || !attrs.SignEncrypt || attrs.Decrypt || !attrs.FixedTPM {
		return nil, fmt.Errorf("%w: %#x", ErrNotAK, handle)
	}
	key, err := tpm2.Pub(*pub)
	if err != nil {
		return nil, fmt.Errorf("tpm: AK %#x: %w", handle, err)
	}
	return &ak{handle: tpm2.NamedHandle{Handle: handle, Name: rsp.Name}, public: key}, nil
}

// createAK derives the AK from the endorsement seed, so a TPM always
// yields the same AK for a template, and persists it at handle.
func createAK(t transport.TPM, handle tpm2.TPMHandle, alg AKAlgorithm) error {
	tmpl, err := akTemplate(alg)
	if err != nil {
		return err
	}
	created, err := tpm2.CreatePrimary{
		PrimaryHandle: tpm2.AuthHandle{Handle: tpm2.TPMRHEndorsement, Auth: tpm2.PasswordAuth(nil)},
		InPublic:      tpm2.New2B(tmpl),
	}.Execute(t)
	if err != nil {
		return fmt.Errorf("tpm: create AK: %w", err)
	}
	defer tpm2.FlushContext{FlushHandle: created.ObjectHandle}.Execute(t)
	_, err = tpm2.EvictControl{
		Auth:             tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)},
		ObjectHandle:     tpm2.NamedHandle{Handle: created.ObjectHandle, Name: created.Name},
		PersistentHandle: handle,
	}.Execute(t)
	if err != nil {
		return fmt.Errorf("tpm: persist AK at %#x: %w", handle, err)
	}
	return nil
}
