package se

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
)

// Response is Trustee's SE evidence (SeAttestationResponse): what the
// Ultravisor answered to the request, with the sealed secrets and header
// tags the request carried echoed back. Every field is standard base64.
type Response struct {
	Measurement        []byte
	AdditionalData     []byte
	UserData           []byte
	CUID               []byte
	EncrMeasurementKey []byte
	EncrRequestNonce   []byte
	Tags               Tags
}

// Challenge is Trustee's SE challenge (SeAttestationRequest): the KBS
// sends it as the nonce of its challenge, and the guest hands the request
// blob to the Ultravisor.
type Challenge struct {
	RequestBlob        []byte `json:"request_blob"`
	MeasurementSize    uint32 `json:"measurement_size"`
	AdditionalSize     uint32 `json:"additional_size"`
	EncrMeasurementKey []byte `json:"encr_measurement_key"`
	EncrRequestNonce   []byte `json:"encr_request_nonce"`
	ImageHdrTags       []byte `json:"image_hdr_tags"`
}

const cuidSize = 16

// ParseEvidence reads Trustee's SE evidence JSON.
func ParseEvidence(raw []byte) (*Response, error) {
	var j struct {
		Measurement        *string `json:"measurement"`
		AdditionalData     *string `json:"additional_data"`
		UserData           *string `json:"user_data"`
		CUID               *string `json:"cuid"`
		EncrMeasurementKey *string `json:"encr_measurement_key"`
		EncrRequestNonce   *string `json:"encr_request_nonce"`
		ImageHdrTags       *string `json:"image_hdr_tags"`
	}
	if err := json.Unmarshal(raw, &j); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrEvidenceJSON, err)
	}
	r := &Response{}
	var tags []byte
	for _, f := range []struct {
		name string
		in   *string
		out  *[]byte
		size int // exact size, or -1
	}{
		{"measurement", j.Measurement, &r.Measurement, MeasurementSize},
		{"additional_data", j.AdditionalData, &r.AdditionalData, -1},
		{"user_data", j.UserData, &r.UserData, -1},
		{"cuid", j.CUID, &r.CUID, cuidSize},
		{"encr_measurement_key", j.EncrMeasurementKey, &r.EncrMeasurementKey, -1},
		{"encr_request_nonce", j.EncrRequestNonce, &r.EncrRequestNonce, -1},
		{"image_hdr_tags", j.ImageHdrTags, &tags, TagsSize},
	} {
		if f.in == nil {
			return nil, fmt.Errorf("%w: %s missing", ErrEvidenceJSON, f.name)
		}
		b, err := base64.StdEncoding.DecodeString(*f.in)
		if err != nil {
			return nil, fmt.Errorf("%w: %s: %v", ErrEvidenceJSON, f.name, err)
		}
		if f.size >= 0 && len(b) != f.size {
			return nil, fmt.Errorf("%w: %s has %d bytes, want %d", ErrEvidenceJSON, f.name, len(b), f.size)
		}
		*f.out = b
	}
	// The Ultravisor's lengths: user data up to 256 bytes, additional data
	// as the request asked.
	if len(r.UserData) > 256 {
		return nil, fmt.Errorf("%w: user_data has %d bytes", ErrEvidenceJSON, len(r.UserData))
	}
	copy(r.Tags[:], tags)
	return r, nil
}

// MarshalJSON writes the evidence as Trustee's SE attester sends it.
func (r *Response) MarshalJSON() ([]byte, error) {
	b := base64.StdEncoding.EncodeToString
	return json.Marshal(map[string]string{
		"measurement": b(r.Measurement), "additional_data": b(r.AdditionalData), "user_data": b(r.UserData),
		"cuid": b(r.CUID), "encr_measurement_key": b(r.EncrMeasurementKey),
		"encr_request_nonce": b(r.EncrRequestNonce), "image_hdr_tags": b(r.Tags[:]),
	})
}
