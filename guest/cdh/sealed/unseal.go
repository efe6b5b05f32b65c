package sealed

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"

	"github.com/cocoon-cc/cocoon/guest/cdh/resource"
	"github.com/cocoon-cc/cocoon/guest/cdh/wrap"
)

// Getter fetches KBS resources (after attestation).
type Getter interface {
	GetResource(ctx context.Context, u resource.URI) ([]byte, error)
}

// Unsealer unseals secrets with keys and data from the KBS.
type Unsealer struct {
	KBS Getter
	// SkipVerification trusts the payload without checking the signature
	// (cdh.toml's skip_sealed_secret_verification; for debugging only).
	SkipVerification bool
}

// Unseal verifies secret and returns its plaintext.
func (u *Unsealer) Unseal(ctx context.Context, secret []byte) ([]byte, error) {
	j, err := parseJWS(secret)
	if err != nil {
		return nil, err
	}
	if !u.SkipVerification {
		kb, err := u.KBS.GetResource(ctx, j.kid)
		if err != nil {
			return nil, fmt.Errorf("get verification key %s: %w", j.kid, err)
		}
		pub, err := ParseVerificationKey(kb)
		if err != nil {
			return nil, err
		}
		if err := j.verify(pub); err != nil {
			return nil, err
		}
	}
	s, err := parsePayload(j.payload)
	if err != nil {
		return nil, err
	}
	if s.Type == TypeVault {
		return u.get(ctx, s.Name)
	}
	return u.openEnvelope(ctx, s)
}

func (u *Unsealer) get(ctx context.Context, uri string) ([]byte, error) {
	r, err := resource.Parse(uri)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	return u.KBS.GetResource(ctx, r)
}

func (u *Unsealer) openEnvelope(ctx context.Context, s *Secret) ([]byte, error) {
	kek, err := u.get(ctx, s.KeyID)
	if err != nil {
		return nil, fmt.Errorf("get key-wrapping key: %w", err)
	}
	defer clear(kek)
	wrapped, _ := base64.StdEncoding.DecodeString(s.EncryptedKey)
	if len(wrapped) < 12 {
		return nil, fmt.Errorf("%w: encrypted_key too short", ErrMalformed)
	}
	dek, err := wrap.Decrypt(wrap.A256GCM, kek, wrapped[:12], wrapped[12:])
	if err != nil {
		return nil, fmt.Errorf("unwrap encrypted_key: %w", err)
	}
	defer clear(dek)
	iv, _ := base64.StdEncoding.DecodeString(s.IV)
	data, _ := base64.StdEncoding.DecodeString(s.EncryptedData)
	out, err := wrap.Decrypt(wrap.Type(s.WrapType), dek, iv, data)
	if err != nil {
		return nil, fmt.Errorf("decrypt encrypted_data: %w", err)
	}
	return out, nil
}

// NewVault returns a vault secret pointing at the resource uri.
func NewVault(uri string) *Secret {
	return &Secret{Version: Version, Type: TypeVault, Provider: ProviderKBS, Name: uri,
		ProviderSettings: map[string]any{}, Annotations: map[string]any{}}
}

// NewEnvelope encrypts plaintext with a fresh data key under t and wraps
// the data key with kek, the 32-byte key stored in the KBS at keyID.
func NewEnvelope(keyID string, kek, plaintext []byte, t wrap.Type) (*Secret, error) {
	dek := make([]byte, wrap.KeySize)
	if _, err := rand.Read(dek); err != nil {
		return nil, err
	}
	defer clear(dek)
	iv, data, err := wrap.Encrypt(t, dek, plaintext)
	if err != nil {
		return nil, err
	}
	kiv, wrapped, err := wrap.Encrypt(wrap.A256GCM, kek, dek)
	if err != nil {
		return nil, fmt.Errorf("wrap data key: %w", err)
	}
	std := base64.StdEncoding.EncodeToString
	return &Secret{Version: Version, Type: TypeEnvelope, Provider: ProviderKBS, KeyID: keyID,
		EncryptedKey: std(append(kiv, wrapped...)), EncryptedData: std(data), WrapType: string(t), IV: std(iv),
		ProviderSettings: map[string]any{}, Annotations: map[string]any{}}, nil
}
