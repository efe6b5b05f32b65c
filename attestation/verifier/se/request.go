package se

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdh"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/binary"
	"fmt"
)

// The attestation request control block (ARCB), as IBM's s390-tools (pv
// crate) lays it out and the Ultravisor reads it:
//
//	header (48): magic (8, zero), version 0x0100, total length, IV (12),
//	  reserved, number of key slots (byte 39), reserved, size of the
//	  encrypted area (80)
//	flags (8), measurement algorithm (4, 1 = HMAC-SHA512), reserved (4)
//	customer public key (160): P-521 x ‖ y, each big-endian in 80 bytes
//	key slots (80 each): SHA-256 of the host key's coordinates ‖ the
//	  request protection key sealed with AES-256-GCM (zero IV, no AAD)
//	  under SHA-256(ECDH(customer key, host key) ‖ 00000001)
//	measurement key (64) ‖ nonce (16), sealed with AES-256-GCM under the
//	  protection key with everything before as additional data
//	GCM tag (16)
const (
	reqHdrSize  = 48
	coordSize   = 80
	keyslotSize = 80
	measKeySize = 64
	nonceSize   = 16
	confSize    = measKeySize + nonceSize
	gcmTagSize  = 16
	arcbVersion = 0x0100
	maiHMACSHA  = 1
	// MeasurementSize is the size of an HMAC-SHA512 measurement.
	MeasurementSize = 64
	phkhSize        = 32
	// AdditionalSize is what the request asks for: the image's and the
	// attestation's public host-key hashes.
	AdditionalSize = 2 * phkhSize
)

// Flags of the request: bit n counts from the most significant bit.
const (
	flagNonce      = 1
	flagImagePHKH  = 2
	flagAttestPHKH = 3
	requestedFlags = 1<<(63-flagNonce) | 1<<(63-flagImagePHKH) | 1<<(63-flagAttestPHKH)
)

// coords is a P-521 point as the Ultravisor reads it: x ‖ y, each
// big-endian in 80 bytes.
func coords(k *ecdh.PublicKey) []byte {
	b := k.Bytes() // 0x04 ‖ x ‖ y, 66 bytes each
	n := (len(b) - 1) / 2
	out := make([]byte, 2*coordSize)
	copy(out[coordSize-n:], b[1:1+n])
	copy(out[2*coordSize-n:], b[1+n:])
	return out
}

// PHKH is the public host-key hash the Ultravisor reports for a host key.
func PHKH(k *ecdh.PublicKey) []byte {
	h := sha256.Sum256(coords(k))
	return h[:]
}

// requestSecrets are what only the verifier and the Ultravisor may know.
type requestSecrets struct {
	measKey [measKeySize]byte
	nonce   [nonceSize]byte
}

// NewGCM is AES-256-GCM under key, as requests and key slots use it.
func NewGCM(key []byte) (cipher.AEAD, error) {
	b, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(b)
}

func gcmSeal(key, iv, plain, aad []byte) ([]byte, error) {
	g, err := NewGCM(key)
	if err != nil {
		return nil, err
	}
	return g.Seal(nil, iv, plain, aad), nil
}

// slotKey derives a key slot's wrapping key from an ECDH agreement.
func slotKey(priv *ecdh.PrivateKey, pub *ecdh.PublicKey) ([]byte, error) {
	shared, err := priv.ECDH(pub)
	if err != nil {
		return nil, err
	}
	k := sha256.Sum256(append(shared, 0, 0, 0, 1))
	return k[:], nil
}

// buildRequest encrypts an ARCB carrying s to the host keys, with a fresh
// customer key, protection key and IV.
func buildRequest(hostKeys []*ecdh.PublicKey, s *requestSecrets) ([]byte, error) {
	cust, err := ecdh.P521().GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	protKey, iv := make([]byte, 32), make([]byte, 12)
	rand.Read(protKey)
	rand.Read(iv)
	return encodeRequest(hostKeys, s, cust, protKey, iv)
}

// encodeRequest lays the ARCB out and encrypts it.
func encodeRequest(hostKeys []*ecdh.PublicKey, s *requestSecrets, cust *ecdh.PrivateKey, protKey, iv []byte) ([]byte, error) {
	if len(hostKeys) == 0 || len(hostKeys) > 255 {
		return nil, fmt.Errorf("%w: %d host keys", ErrConfig, len(hostKeys))
	}
	size := reqHdrSize + 16 + 2*coordSize + len(hostKeys)*keyslotSize + confSize + gcmTagSize
	b := make([]byte, reqHdrSize, size)
	binary.BigEndian.PutUint32(b[8:], arcbVersion)
	binary.BigEndian.PutUint32(b[12:], uint32(size))
	copy(b[16:28], iv)
	b[39] = byte(len(hostKeys))
	binary.BigEndian.PutUint32(b[44:], confSize)
	b = binary.BigEndian.AppendUint64(b, requestedFlags)
	b = binary.BigEndian.AppendUint32(b, maiHMACSHA)
	b = binary.BigEndian.AppendUint32(b, 0)
	b = append(b, coords(cust.PublicKey())...)
	for _, hk := range hostKeys {
		k, err := slotKey(cust, hk)
		if err != nil {
			return nil, err
		}
		wrapped, err := gcmSeal(k, make([]byte, 12), protKey, nil)
		if err != nil {
			return nil, err
		}
		b = append(b, PHKH(hk)...)
		b = append(b, wrapped...)
	}
	conf := append(s.measKey[:], s.nonce[:]...)
	sealed, err := gcmSeal(protKey, iv, conf, b)
	if err != nil {
		return nil, err
	}
	return append(b, sealed...), nil
}

// Measurement is the HMAC-SHA512 the Ultravisor computes with the
// request's measurement key over the image header tags, the configuration
// UID, the lengths of the user and additional data, the user data, the
// request's nonce and the additional data.
func Measurement(key []byte, tags *Tags, cuid, user, nonce, additional []byte) []byte {
	m := hmac.New(sha512.New, key)
	m.Write(tags[:])
	m.Write(cuid)
	var lens [8]byte
	binary.BigEndian.PutUint16(lens[0:], uint16(len(user)))
	binary.BigEndian.PutUint32(lens[4:], uint32(len(additional)))
	m.Write(lens[:])
	m.Write(user)
	m.Write(nonce)
	m.Write(additional)
	return m.Sum(nil)
}
