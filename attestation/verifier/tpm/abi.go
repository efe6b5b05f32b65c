package tpm

import (
	"crypto"
	"encoding/binary"
	"errors"
	"fmt"
	"math/big"
)

// TPM 2.0 constants (TCG TPM 2.0 Library, Part 2: Structures).
const (
	generatedValue = 0xff544347 // TPM_GENERATED_VALUE: "\xffTCG"
	stAttestQuote  = 0x8018     // TPM_ST_ATTEST_QUOTE

	algRSASSA = 0x0014
	algECDSA  = 0x0018

	algSHA256 = 0x000b
	algSHA384 = 0x000c
	algSHA512 = 0x000d
)

// Parse errors. All of them wrap verifier.ErrMalformedEvidence when they
// reach Evaluate's caller.
var (
	ErrTruncated       = errors.New("tpm: structure truncated")
	ErrTrailingBytes   = errors.New("tpm: trailing bytes after structure")
	ErrNotTPMGenerated = errors.New("tpm: attestation magic is not TPM_GENERATED_VALUE")
	ErrNotQuote        = errors.New("tpm: attestation is not a TPM2_Quote")
	ErrUnsupportedAlg  = errors.New("tpm: unsupported algorithm")
	ErrBadField        = errors.New("tpm: field out of range")
)

// Attest is a decoded TPMS_ATTEST of type TPM_ST_ATTEST_QUOTE.
type Attest struct {
	QualifiedSigner []byte
	// ExtraData is the caller's qualifying data: the nonce.
	ExtraData       []byte
	Clock           uint64
	ResetCount      uint32
	RestartCount    uint32
	Safe            bool
	FirmwareVersion uint64
	Selection       []PCRSelection
	PCRDigest       []byte
}

// PCRSelection is one bank of a TPML_PCR_SELECTION.
type PCRSelection struct {
	Hash crypto.Hash
	// PCRs lists the selected indices in ascending order, the order in which
	// the TPM concatenates their values into PCRDigest.
	PCRs []int
}

// Signature is a decoded TPMT_SIGNATURE.
type Signature struct {
	Alg  uint16 // algRSASSA or algECDSA
	Hash crypto.Hash
	RSA  []byte   // RSASSA-PKCS1-v1_5 signature
	R, S *big.Int // ECDSA signature
}

// ParseAttest decodes a marshalled TPMS_ATTEST holding a quote. It rejects
// anything but a TPM-generated quote, and trailing bytes, so that the bytes
// the signature covers are exactly the bytes interpreted.
func ParseAttest(b []byte) (*Attest, error) {
	r := reader{b: b}
	if magic := r.u32(); r.err == nil && magic != generatedValue {
		return nil, fmt.Errorf("%w: %#x", ErrNotTPMGenerated, magic)
	}
	if typ := r.u16(); r.err == nil && typ != stAttestQuote {
		return nil, fmt.Errorf("%w: type %#x", ErrNotQuote, typ)
	}
	a := &Attest{
		QualifiedSigner: r.sized(),
		ExtraData:       r.sized(),
		Clock:           r.u64(),
		ResetCount:      r.u32(),
		RestartCount:    r.u32(),
		Safe:            r.yesNo(),
		FirmwareVersion: r.u64(),
	}
	a.Selection = r.selection()
	a.PCRDigest = r.sized()
	if err := r.done(); err != nil {
		return nil, err
	}
	return a, nil
}

// ParseSignature decodes a marshalled TPMT_SIGNATURE of the schemes an AK
// quotes with: RSASSA (what guest-components produces) and ECDSA.
func ParseSignature(b []byte) (*Signature, error) {
	r := reader{b: b}
	s := &Signature{Alg: r.u16()}
	s.Hash = r.hash()
	switch {
	case r.err != nil:
	case s.Alg == algRSASSA:
		s.RSA = r.sized()
	case s.Alg == algECDSA:
		s.R = new(big.Int).SetBytes(r.sized())
		s.S = new(big.Int).SetBytes(r.sized())
	default:
		return nil, fmt.Errorf("%w: signature scheme %#x", ErrUnsupportedAlg, s.Alg)
	}
	if err := r.done(); err != nil {
		return nil, err
	}
	return s, nil
}

// reader decodes big-endian TPM structures; the first error sticks and
// later reads return zero values.
type reader struct {
	b   []byte
	err error
}

func (r *reader) take(n int) []byte {
	if r.err != nil {
		return nil
	}
	if len(r.b) < n {
		r.err = ErrTruncated
		return nil
	}
	out := r.b[:n:n]
	r.b = r.b[n:]
	return out
}

func (r *reader) u8() uint8 {
	if b := r.take(1); b != nil {
		return b[0]
	}
	return 0
}

func (r *reader) u16() uint16 {
	if b := r.take(2); b != nil {
		return binary.BigEndian.Uint16(b)
	}
	return 0
}

func (r *reader) u32() uint32 {
	if b := r.take(4); b != nil {
		return binary.BigEndian.Uint32(b)
	}
	return 0
}

func (r *reader) u64() uint64 {
	if b := r.take(8); b != nil {
		return binary.BigEndian.Uint64(b)
	}
	return 0
}

// sized reads a TPM2B: a 16-bit length and that many bytes.
func (r *reader) sized() []byte {
	return r.take(int(r.u16()))
}

func (r *reader) yesNo() bool {
	v := r.u8()
	if v > 1 && r.err == nil {
		r.err = fmt.Errorf("%w: TPMI_YES_NO %d", ErrBadField, v)
	}
	return v == 1
}

func (r *reader) hash() crypto.Hash {
	alg := r.u16()
	if r.err != nil {
		return 0
	}
	h, err := hashOf(alg)
	if err != nil {
		r.err = err
	}
	return h
}

// maxBanks bounds TPML_PCR_SELECTION.count: a TPM has a handful of banks,
// and the bound keeps a hostile count from driving allocations.
const maxBanks = 16

func (r *reader) selection() []PCRSelection {
	n := r.u32()
	if r.err == nil && n > maxBanks {
		r.err = fmt.Errorf("%w: %d PCR banks", ErrBadField, n)
	}
	var out []PCRSelection
	for i := uint32(0); i < n && r.err == nil; i++ {
		sel := PCRSelection{Hash: r.hash()}
		bitmap := r.take(int(r.u8()))
		for j := 0; j < 8*len(bitmap); j++ {
			if bitmap[j/8]&(1<<(j%8)) != 0 {
				sel.PCRs = append(sel.PCRs, j)
			}
		}
		out = append(out, sel)
	}
	return out
}

func (r *reader) done() error {
	if r.err == nil && len(r.b) != 0 {
		r.err = fmt.Errorf("%w: %d", ErrTrailingBytes, len(r.b))
	}
	return r.err
}

func hashOf(alg uint16) (crypto.Hash, error) {
	switch alg {
	case algSHA256:
		return crypto.SHA256, nil
	case algSHA384:
		return crypto.SHA384, nil
	case algSHA512:
		return crypto.SHA512, nil
	}
	return 0, fmt.Errorf("%w: hash %#x", ErrUnsupportedAlg, alg)
}
