package protocol

import "fmt"

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

var knownTees = map[Tee]bool{
	TeeSample: true, TeeSampleDevice: true, TeeSNP: true, TeeTDX: true, TeeSGX: true,
	TeeAzSNPvTPM: true, TeeAzTDXvTPM: true, TeeTPM: true, TeeSE: true, TeeCCA: true,
	TeeCSV: true, TeeNvidia: true, TeeHygonDCU: true,
}

// ParseTee checks that s names a TEE of the protocol.
func ParseTee(s string) (Tee, error) {
	if !knownTees[Tee(s)] {
		return "", fmt.Errorf("unknown tee %q", s)
	}
	return Tee(s), nil
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
