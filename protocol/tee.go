package protocol

import (
	"fmt"
	"slices"
)

// Tee names a kind of trusted execution environment as the KBS protocol
// spells it.
type Tee string

// The TEE names of KBS protocol 0.4.0.
const (
	TeeSample       Tee = "sample"
	TeeSampleDevice Tee = "sampledevice"
	TeeSNP          Tee = "snp"
	TeeTDX          Tee = "tdx"
	TeeSGX          Tee = "sgx"
	TeeAzSNPvTPM    Tee = "az-snp-vtpm"
	TeeAzTDXvTPM    Tee = "az-tdx-vtpm"
	TeeTPM          Tee = "tpm"
	TeeSE           Tee = "se"
	TeeCCA          Tee = "cca"
	TeeCSV          Tee = "csv"
	TeeNvidia       Tee = "nvidia"
	TeeHygonDCU     Tee = "hygondcu"
)

// tees are the protocol's TEEs; a TEE's position is its one-byte code
// (see Code), so the list only grows at its end.
var tees = []Tee{TeeSample, TeeSampleDevice, TeeSNP, TeeTDX, TeeSGX, TeeAzSNPvTPM, TeeAzTDXvTPM,
	TeeTPM, TeeSE, TeeCCA, TeeCSV, TeeNvidia, TeeHygonDCU}

// ParseTee checks that s names a TEE of the protocol.
func ParseTee(s string) (Tee, error) {
	if _, ok := Tee(s).Code(); !ok {
		return "", fmt.Errorf("unknown tee %q", s)
	}
	return Tee(s), nil
}

// Code is a stable one-byte name of the TEE, for compact encodings.
func (t Tee) Code() (byte, bool) {
	i := slices.Index(tees, t)
	return byte(i), i >= 0
}

// TeeOfCode is the TEE whose Code is c.
func TeeOfCode(c byte) (Tee, bool) {
	if int(c) >= len(tees) {
		return "", false
	}
	return tees[c], true
}

// UnmarshalText refuses unknown TEE names, so a decoded Request always
// carries a valid one.
func (t *Tee) UnmarshalText(b []byte) error {
	v, err := ParseTee(string(b))
	if err != nil {
		return err
	}
	*t = v
	return nil
}

// ReportDataSize is the width of the TEE field that carries the runtime-data
// digest; 0 means the digest is compared as is.
func (t Tee) ReportDataSize() int {
	switch t {
	case TeeSNP, TeeTDX, TeeSGX, TeeAzSNPvTPM, TeeAzTDXvTPM, TeeCSV:
		return 64
	}
	return 0
}

// RuntimeDataHash is the hash of the runtime data the TEE's evidence
// carries, as Trustee's KBS picks it: SHA-512 for IBM SE (its user data
// holds the whole digest), SHA-384 for the others.
func (t Tee) RuntimeDataHash() string {
	if t == TeeSE {
		return "sha512"
	}
	return "sha384"
}
