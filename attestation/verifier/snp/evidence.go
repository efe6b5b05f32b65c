package snp

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"strconv"

	"github.com/google/go-sev-guest/abi"
)

// Evidence is what a CoCo guest's attestation agent sends for SNP:
// `{"attestation_report":{...},"cert_chain":[{"cert_type":"VCEK","data":[...]}]|null}`.
// The report is in the serde form of the Rust sev crate (the form Trustee
// reads): every field by name, byte arrays as arrays of numbers, TCB
// versions as objects, reserved fields left out.
type Evidence struct {
	Report *Report
	// Certs are the certificates the host attached to the extended report.
	Certs CertChain
}

// ParseEvidence parses the JSON evidence and rebuilds the signed report.
func ParseEvidence(data []byte) (*Evidence, error) {
	var top map[string]json.RawMessage
	if err := json.Unmarshal(data, &top); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrEvidenceJSON, err)
	}
	rep, ok := top["attestation_report"]
	if !ok {
		return nil, fmt.Errorf("%w: missing attestation_report", ErrEvidenceJSON)
	}
	raw, err := reportFromJSON(rep)
	if err != nil {
		return nil, fmt.Errorf("%w: attestation_report: %v", ErrEvidenceJSON, err)
	}
	r, err := ParseReport(raw)
	if err != nil {
		return nil, err
	}
	certs, err := certChainFromJSON(top["cert_chain"])
	if err != nil {
		return nil, fmt.Errorf("%w: cert_chain: %v", ErrEvidenceJSON, err)
	}
	return &Evidence{Report: r, Certs: certs}, nil
}

// MarshalJSON writes the evidence in the form ParseEvidence reads, field
// for field as the sev crate (7.x) serializes it.
func (e *Evidence) MarshalJSON() ([]byte, error) {
	if e.Report == nil {
		return nil, fmt.Errorf("snp: evidence without a report")
	}
	var b bytes.Buffer
	b.WriteString(`{"attestation_report":`)
	reportToJSON(&b, e.Report.raw)
	b.WriteString(`,"cert_chain":`)
	certChainToJSON(&b, e.Certs)
	b.WriteByte('}')
	return b.Bytes(), nil
}

// fieldKind says how a report field is spelled in JSON.
type fieldKind int

const (
	kindU32 fieldKind = iota
	kindU64
	kindBytes
	kindTCB
	kindCPUID      // Option<u8>, present from version 3
	kindMitigation // Option<u64>, present from version 5
	kindVersion    // {major, minor, build}, stored build first
	kindSignature  // {r, s}, 72 bytes each
)

type reportField struct {
	name string
	off  int
	kind fieldKind
	size int
}

// reportFields maps the JSON fields to the ABI offsets, in the sev crate's
// order. Anything not listed is reserved and must be zero.
var reportFields = []reportField{
	{"version", 0x00, kindU32, 4},
	{"guest_svn", 0x04, kindU32, 4},
	{"policy", 0x08, kindU64, 8},
	{"family_id", 0x10, kindBytes, 16},
	{"image_id", 0x20, kindBytes, 16},
	{"vmpl", 0x30, kindU32, 4},
	{"sig_algo", 0x34, kindU32, 4},
	{"current_tcb", 0x38, kindTCB, 8},
	{"plat_info", 0x40, kindU64, 8},
	{"key_info", 0x48, kindU32, 4},
	{"report_data", 0x50, kindBytes, 64},
	{"measurement", 0x90, kindBytes, 48},
	{"host_data", 0xc0, kindBytes, 32},
	{"id_key_digest", 0xe0, kindBytes, 48},
	{"author_key_digest", 0x110, kindBytes, 48},
	{"report_id", 0x140, kindBytes, 32},
	{"report_id_ma", 0x160, kindBytes, 32},
	{"reported_tcb", 0x180, kindTCB, 8},
	{"cpuid_fam_id", 0x188, kindCPUID, 1},
	{"cpuid_mod_id", 0x189, kindCPUID, 1},
	{"cpuid_step", 0x18a, kindCPUID, 1},
	{"chip_id", 0x1a0, kindBytes, 64},
	{"committed_tcb", 0x1e0, kindTCB, 8},
	{"current", 0x1e8, kindVersion, 3},
	{"committed", 0x1ec, kindVersion, 3},
	{"launch_tcb", 0x1f0, kindTCB, 8},
	{"launch_mit_vector", 0x1f8, kindMitigation, 8},
	{"current_mit_vector", 0x200, kindMitigation, 8},
	{"signature", 0x2a0, kindSignature, 144},
}

// reportFromJSON rebuilds the ABI bytes the signature covers. Like the sev
// crate, it ignores optional fields the version does not define.
func reportFromJSON(data json.RawMessage) ([]byte, error) {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(data, &obj); err != nil {
		return nil, err
	}
	raw := make([]byte, abi.ReportSize)
	// The version and CPUID decide which fields exist and the TCB layout,
	// so they are read before the rest.
	for _, f := range reportFields {
		if f.name == "version" || f.kind == kindCPUID {
			if err := putField(raw, obj, f, false); err != nil {
				return nil, err
			}
		}
	}
	turin := layoutTurin(raw)
	for _, f := range reportFields {
		if err := putField(raw, obj, f, turin); err != nil {
			return nil, err
		}
	}
	return raw, nil
}

// layoutTurin applies the rule of Report.turin to bytes being built.
func layoutTurin(raw []byte) bool {
	return binary.LittleEndian.Uint32(raw) >= abi.ReportVersion3 &&
		productFromCPUID(raw[offCPUIDFamily], raw[offCPUIDModel]) == Turin
}

func putField(raw []byte, obj map[string]json.RawMessage, f reportField, turin bool) error {
	v, ok := obj[f.name]
	version := binary.LittleEndian.Uint32(raw)
	switch f.kind {
	case kindCPUID, kindMitigation:
		min := uint32(abi.ReportVersion3)
		if f.kind == kindMitigation {
			min = abi.ReportVersion5
		}
		if version < min || !ok || isNull(v) {
			return nil
		}
	default:
		if !ok {
			return fmt.Errorf("missing field %s", f.name)
		}
	}
	dst := raw[f.off : f.off+f.size]
	var err error
	switch f.kind {
	case kindU32, kindU64, kindCPUID, kindMitigation:
		var n uint64
		n, err = jsonUint(v, 8*f.size)
		putLE(dst, n)
	case kindBytes:
		var b []byte
		if b, err = jsonBytes(v, f.size); err == nil {
			copy(dst, b)
		}
	case kindTCB:
		var t TCB
		if t, err = tcbFromJSON(v, turin); err == nil {
			binary.LittleEndian.PutUint64(dst, t.encode(turin))
		}
	case kindVersion:
		err = versionFromJSON(v, dst)
	case kindSignature:
		err = signatureFromJSON(v, dst)
	}
	if err != nil {
		return fmt.Errorf("%s: %v", f.name, err)
	}
	return nil
}

func putLE(b []byte, n uint64) {
	for i := range b {
		b[i] = byte(n >> (8 * i))
	}
}

func getLE(b []byte) uint64 {
	var n uint64
	for i := len(b) - 1; i >= 0; i-- {
		n = n<<8 | uint64(b[i])
	}
	return n
}

func tcbFromJSON(v json.RawMessage, turin bool) (TCB, error) {
	var o map[string]json.RawMessage
	if err := json.Unmarshal(v, &o); err != nil || o == nil {
		return TCB{}, fmt.Errorf("not a TCB object")
	}
	var t TCB
	for _, f := range []struct {
		name string
		dst  *uint8
	}{{"bootloader", &t.Bootloader}, {"tee", &t.TEE}, {"snp", &t.SNP}, {"microcode", &t.Microcode}} {
		n, err := requiredUint(o, f.name, 8)
		if err != nil {
			return TCB{}, err
		}
		*f.dst = uint8(n)
	}
	// The sev crate writes a missing FMC as 0 and ignores it before Turin.
	if fmc, ok := o["fmc"]; ok && turin && !isNull(fmc) {
		n, err := jsonUint(fmc, 8)
		if err != nil {
			return TCB{}, fmt.Errorf("fmc: %v", err)
		}
		t.FMC = uint8(n)
	}
	return t, nil
}

func versionFromJSON(v json.RawMessage, dst []byte) error {
	var o map[string]json.RawMessage
	if err := json.Unmarshal(v, &o); err != nil || o == nil {
		return fmt.Errorf("not a version object")
	}
	for i, name := range []string{"build", "minor", "major"} {
		n, err := requiredUint(o, name, 8)
		if err != nil {
			return err
		}
		dst[i] = byte(n)
	}
	return nil
}

func signatureFromJSON(v json.RawMessage, dst []byte) error {
	var o map[string]json.RawMessage
	if err := json.Unmarshal(v, &o); err != nil || o == nil {
		return fmt.Errorf("not a signature object")
	}
	for i, name := range []string{"r", "s"} {
		f, ok := o[name]
		if !ok {
			return fmt.Errorf("missing field %s", name)
		}
		b, err := jsonBytes(f, 72)
		if err != nil {
			return fmt.Errorf("%s: %v", name, err)
		}
		copy(dst[72*i:], b)
	}
	return nil
}

func requiredUint(o map[string]json.RawMessage, name string, bits int) (uint64, error) {
	v, ok := o[name]
	if !ok {
		return 0, fmt.Errorf("missing field %s", name)
	}
	n, err := jsonUint(v, bits)
	if err != nil {
		return 0, fmt.Errorf("%s: %v", name, err)
	}
	return n, nil
}

func isNull(v json.RawMessage) bool { return string(v) == "null" }

// jsonUint reads an unsigned integer of the given width. Like serde, it
// refuses fractions, exponents, signs and null.
func jsonUint(v json.RawMessage, bits int) (uint64, error) {
	v = bytes.TrimSpace(v)
	if len(v) == 0 {
		return 0, fmt.Errorf("empty number")
	}
	for _, c := range v {
		if c < '0' || c > '9' {
			return 0, fmt.Errorf("%.20q is not an unsigned integer", v)
		}
	}
	n, err := strconv.ParseUint(string(v), 10, bits)
	if err != nil {
		return 0, fmt.Errorf("%.20q does not fit %d bits", v, bits)
	}
	return n, nil
}

// jsonBytes reads an array of byte values, of exactly size elements unless
// size is negative. The input is valid JSON already (it came out of
// json.Unmarshal), so any comma splits elements or sits inside a non-number
// element that jsonUint then refuses.
func jsonBytes(v json.RawMessage, size int) ([]byte, error) {
	v = bytes.TrimSpace(v)
	if len(v) < 2 || v[0] != '[' || v[len(v)-1] != ']' {
		return nil, fmt.Errorf("not an array of bytes")
	}
	body := bytes.TrimSpace(v[1 : len(v)-1])
	out := make([]byte, 0, max(size, 0))
	for len(body) > 0 {
		elem := body
		if i := bytes.IndexByte(body, ','); i >= 0 {
			elem, body = body[:i], body[i+1:]
			if len(bytes.TrimSpace(body)) == 0 {
				return nil, fmt.Errorf("trailing comma")
			}
		} else {
			body = nil
		}
		n, err := jsonUint(elem, 8)
		if err != nil {
			return nil, err
		}
		out = append(out, byte(n))
	}
	if size >= 0 && len(out) != size {
		return nil, fmt.Errorf("%d bytes, want %d", len(out), size)
	}
	return out, nil
}

// reportToJSON is the inverse of reportFromJSON.
func reportToJSON(b *bytes.Buffer, raw []byte) {
	version := binary.LittleEndian.Uint32(raw)
	turin := layoutTurin(raw)
	b.WriteByte('{')
	for i, f := range reportFields {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.Quote(f.name))
		b.WriteByte(':')
		field := raw[f.off : f.off+f.size]
		switch f.kind {
		case kindU32, kindU64:
			b.WriteString(strconv.FormatUint(getLE(field), 10))
		case kindCPUID, kindMitigation:
			if f.kind == kindCPUID && version < abi.ReportVersion3 || f.kind == kindMitigation && version < abi.ReportVersion5 {
				b.WriteString("null")
			} else {
				b.WriteString(strconv.FormatUint(getLE(field), 10))
			}
		case kindBytes:
			writeBytes(b, field)
		case kindTCB:
			writeTCB(b, decodeTCB(getLE(field), turin), turin)
		case kindVersion:
			fmt.Fprintf(b, `{"major":%d,"minor":%d,"build":%d}`, field[2], field[1], field[0])
		case kindSignature:
			b.WriteString(`{"r":`)
			writeBytes(b, field[:72])
			b.WriteString(`,"s":`)
			writeBytes(b, field[72:])
			b.WriteByte('}')
		}
	}
	b.WriteByte('}')
}

func writeTCB(b *bytes.Buffer, t TCB, turin bool) {
	fmc := "null"
	if turin {
		fmc = strconv.Itoa(int(t.FMC))
	}
	fmt.Fprintf(b, `{"fmc":%s,"bootloader":%d,"tee":%d,"snp":%d,"microcode":%d}`,
		fmc, t.Bootloader, t.TEE, t.SNP, t.Microcode)
}

func writeBytes(b *bytes.Buffer, data []byte) {
	b.WriteByte('[')
	for i, c := range data {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.Itoa(int(c)))
	}
	b.WriteByte(']')
}
