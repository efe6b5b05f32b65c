// Package wrap holds the symmetric schemes sealed secrets and image layer
// keys are wrapped with, named as JWA names them (RFC 7518 5.2.6):
// A256GCM (the tag appended to the ciphertext) and A256CTR.
package wrap

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"errors"
	"fmt"
)

// Type is a wrap_type.
type Type string

// The wrap types guest-components accepts.
const (
	A256GCM Type = "A256GCM"
	// A256CTR is not authenticated; accepted for compatibility only.
	A256CTR Type = "A256CTR"
)

// KeySize is the key size of both types.
const KeySize = 32

var (
	// ErrUnknownType is returned for a wrap_type other than the above.
	ErrUnknownType = errors.New("unknown wrap_type")
	// ErrKeySize is returned when a key is not 32 bytes.
	ErrKeySize = errors.New("wrapping key must be 32 bytes (AES-256)")
	// ErrIVSize is returned when an IV does not fit the type.
	ErrIVSize = errors.New("iv size does not fit the wrap_type")
	// ErrDecrypt is returned when authenticated decryption fails: wrong
	// key or tampered data.
	ErrDecrypt = errors.New("decryption failed (wrong key or tampered data)")
)

// ParseType checks s names a known type.
func ParseType(s string) (Type, error) {
	switch t := Type(s); t {
	case A256GCM, A256CTR:
		return t, nil
	}
	return "", fmt.Errorf("%w: %q", ErrUnknownType, s)
}

// IVSize is the IV size of t.
func (t Type) IVSize() int {
	if t == A256CTR {
		return aes.BlockSize
	}
	return 12
}

// Decrypt decrypts ciphertext with key and iv under t.
func Decrypt(t Type, key, iv, ciphertext []byte) ([]byte, error) {
	block, err := newBlock(t, key, iv)
	if err != nil {
		return nil, err
	}
	if t == A256CTR {
		out := make([]byte, len(ciphertext))
		cipher.NewCTR(block, iv).XORKeyStream(out, ciphertext)
		return out, nil
	}
	gcm, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	out, err := gcm.Open(nil, iv, ciphertext, nil)
	if err != nil {
		return nil, ErrDecrypt
	}
	return out, nil
}

// Encrypt encrypts plaintext with key under t and a fresh random IV.
func Encrypt(t Type, key, plaintext []byte) (iv, ciphertext []byte, err error) {
	iv = make([]byte, t.IVSize())
	if _, err := rand.Read(iv); err != nil {
		return nil, nil, err
	}
	block, err := newBlock(t, key, iv)
	if err != nil {
		return nil, nil, err
	}
	if t == A256CTR {
		ciphertext = make([]byte, len(plaintext))
		cipher.NewCTR(block, iv).XORKeyStream(ciphertext, plaintext)
		return iv, ciphertext, nil
	}
	gcm, err := cipher.NewGCM(block)
	if err != nil {
		return nil, nil, err
	}
	return iv, gcm.Seal(nil, iv, plaintext, nil), nil
}

func newBlock(t Type, key, iv []byte) (cipher.Block, error) {
	if _, err := ParseType(string(t)); err != nil {
		return nil, err
	}
	if len(key) != KeySize {
		return nil, ErrKeySize
	}
	if len(iv) != t.IVSize() {
		return nil, fmt.Errorf("%w: %s wants %d bytes, got %d", ErrIVSize, t, t.IVSize(), len(iv))
	}
	return aes.NewCipher(key)
}
