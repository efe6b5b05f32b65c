// Package sealed unseals (and, for owners, seals) guest-components sealed
// secrets: "sealed." followed by a compact JWS (ES256) whose kid is the KBS
// resource URI of the verification key (a P-256 JWK) and whose payload is a
// vault secret (a pointer to a KBS resource) or an envelope secret (data
// encrypted with a key that is itself wrapped by a KBS-held key).
package sealed

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/cocoon-cc/cocoon/guest/cdh/resource"
	"github.com/cocoon-cc/cocoon/guest/cdh/wrap"
)

// Version is the only payload version.
const Version = "0.1.0"

// Types of secret.
const (
	TypeVault    = "vault"
	TypeEnvelope = "envelope"
)

// ProviderKBS is the only provider Cocoon's CDH serves.
const ProviderKBS = "kbs"

var (
	// ErrMalformed: not a sealed secret or a field cannot be decoded.
	ErrMalformed = errors.New("malformed sealed secret")
	// ErrUnsigned: the JWS has no usable signature or algorithm.
	ErrUnsigned = errors.New("sealed secret is not signed with ES256")
	// ErrBadSignature: the signature does not verify under the kid's key
	// (tampered, or signed with another key).
	ErrBadSignature = errors.New("sealed secret signature does not verify")
	// ErrBadKey: the verification key is not a P-256 public JWK.
	ErrBadKey = errors.New("bad sealed secret verification key")
	// ErrVersion: an unknown payload version.
	ErrVersion = errors.New("unsupported sealed secret version")
	// ErrUnknownType: neither vault nor envelope.
	ErrUnknownType = errors.New("unknown sealed secret type")
	// ErrUnsupportedProvider: a provider other than kbs.
	ErrUnsupportedProvider = errors.New("unsupported sealed secret provider")
)

// Secret is the JWS payload; fields are those of its type.
type Secret struct {
	Version string `json:"version"`
	Type    string `json:"type"`

	// Provider serves the secret (vault) or the key-wrapping key (envelope).
	Provider         string         `json:"provider"`
	ProviderSettings map[string]any `json:"provider_settings"`
	Annotations      map[string]any `json:"annotations"`

	// Name is the vault secret's resource URI.
	Name string `json:"name,omitempty"`

	// KeyID is the resource URI of the envelope's key-wrapping key.
	KeyID string `json:"key_id,omitempty"`
	// EncryptedKey is standard base64 of the data key wrapped by KeyID's
	// key: 12-byte nonce, then its AES-256-GCM ciphertext and tag.
	EncryptedKey string `json:"encrypted_key,omitempty"`
	// EncryptedData is standard base64 of the secret encrypted with the
	// data key under WrapType and IV (standard base64).
	EncryptedData string `json:"encrypted_data,omitempty"`
	WrapType      string `json:"wrap_type,omitempty"`
	IV            string `json:"iv,omitempty"`
}

// Validate checks the fields the type needs.
func (s *Secret) Validate() error {
	if s.Version != Version {
		return fmt.Errorf("%w: %q", ErrVersion, s.Version)
	}
	if s.Provider != ProviderKBS {
		return fmt.Errorf("%w: %q (Cocoon's CDH serves %q)", ErrUnsupportedProvider, s.Provider, ProviderKBS)
	}
	switch s.Type {
	case TypeVault:
		return checkURI("name", s.Name)
	case TypeEnvelope:
		if err := checkURI("key_id", s.KeyID); err != nil {
			return err
		}
		if _, err := wrap.ParseType(s.WrapType); err != nil {
			return fmt.Errorf("%w: %w", ErrMalformed, err)
		}
		for name, v := range map[string]string{"encrypted_key": s.EncryptedKey, "encrypted_data": s.EncryptedData, "iv": s.IV} {
			if _, err := base64.StdEncoding.DecodeString(v); err != nil || v == "" {
				return fmt.Errorf("%w: %s is not standard base64", ErrMalformed, name)
			}
		}
		return nil
	}
	return fmt.Errorf("%w: %q", ErrUnknownType, s.Type)
}

func checkURI(field, v string) error {
	if _, err := resource.Parse(v); err != nil {
		return fmt.Errorf("%w: %s: %w", ErrMalformed, field, err)
	}
	return nil
}

// parsePayload decodes and validates a JWS payload.
func parsePayload(b []byte) (*Secret, error) {
	var s Secret
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("%w: payload is not the JSON of a secret", ErrMalformed)
	}
	if err := s.Validate(); err != nil {
		return nil, err
	}
	return &s, nil
}
