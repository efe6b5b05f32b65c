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

const (
	cuidSize    = 16
	maxUserData = 256
)

// tagsField is the index of image_hdr_tags in fieldNames.
const tagsField = 6

var fieldNames = [...]string{"measurement", "additional_data", "user_data", "cuid",
	"encr_measurement_key", "encr_request_nonce", "image_hdr_tags"}

// ParseEvidence reads Trustee's SE evidence JSON.
func ParseEvidence(raw []byte) (*Response, error) {
	r := &Response{}
	if err := parseEvidence(raw, r, &decoder{}); err != nil {
		return nil, err
	}
	return r, nil
}

// parseEvidence reads the evidence into r, which Evaluate keeps on its
// stack, with d.
func parseEvidence(raw []byte, r *Response, d *decoder) error {
	var flat [len(fieldNames)][]byte
	fields := flat[:]
	if !flatFields(raw, fieldNames[:], fields) || !d.decode(fields) {
		var err error
		if fields, err = jsonFields(raw); err != nil {
			return err
		}
	}
	var tags []byte
	for i, f := range [...]struct {
		out  *[]byte
		size int // exact size, or -1
	}{
		{&r.Measurement, MeasurementSize}, {&r.AdditionalData, -1}, {&r.UserData, -1}, {&r.CUID, cuidSize},
		{&r.EncrMeasurementKey, -1}, {&r.EncrRequestNonce, -1}, {&tags, TagsSize},
	} {
		if fields[i] == nil {
			return fmt.Errorf("%w: %s missing", ErrEvidenceJSON, fieldNames[i])
		}
		if f.size >= 0 && len(fields[i]) != f.size {
			return fmt.Errorf("%w: %s has %d bytes, want %d", ErrEvidenceJSON, fieldNames[i], len(fields[i]), f.size)
		}
		*f.out = fields[i]
	}
	// The Ultravisor's lengths: user data up to 256 bytes, additional data
	// as the request asked.
	if len(r.UserData) > maxUserData {
		return fmt.Errorf("%w: user_data has %d bytes", ErrEvidenceJSON, len(r.UserData))
	}
	copy(r.Tags[:], tags)
	return nil
}

// decoder decodes the fields flatFields reads. Image header tags whose
// base64 is tagsText are tags, not decoded again (a verifier accepts only
// its image's); the rest go into buf, which Evaluate reuses.
type decoder struct {
	tags     *Tags
	tagsText string
	buf      []byte
}

func (d *decoder) decode(fields [][]byte) bool {
	text := fields[tagsField]
	known := d.tags != nil && text != nil && string(text) == d.tagsText
	if known {
		fields[tagsField] = nil
	}
	if !decodeAll(fields, &d.buf) {
		return false
	}
	if known {
		fields[tagsField] = d.tags[:]
	}
	return true
}

// jsonFields reads the fields with encoding/json, in fieldNames' order;
// a missing field is nil.
func jsonFields(raw []byte) ([][]byte, error) {
	// encoding/json decodes standard base64 into []byte itself; pointers
	// tell a missing field from an empty one.
	var j struct {
		Measurement        *[]byte `json:"measurement"`
		AdditionalData     *[]byte `json:"additional_data"`
		UserData           *[]byte `json:"user_data"`
		CUID               *[]byte `json:"cuid"`
		EncrMeasurementKey *[]byte `json:"encr_measurement_key"`
		EncrRequestNonce   *[]byte `json:"encr_request_nonce"`
		ImageHdrTags       *[]byte `json:"image_hdr_tags"`
	}
	if err := json.Unmarshal(raw, &j); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrEvidenceJSON, err)
	}
	var out [len(fieldNames)][]byte
	for i, f := range []*[]byte{j.Measurement, j.AdditionalData, j.UserData, j.CUID,
		j.EncrMeasurementKey, j.EncrRequestNonce, j.ImageHdrTags} {
		if f != nil {
			out[i] = *f
			if out[i] == nil {
				out[i] = []byte{} // JSON null: present, empty
			}
		}
	}
	return out[:], nil
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
