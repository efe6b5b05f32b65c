package tdx

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/cocoon-cc/cocoon/attestation/verifier/dcap"
)

// eventTypeNames are the event types Trustee knows; others make the log
// malformed, as they do in Trustee.
var eventTypeNames = map[uint32]string{
	0x0: "EV_PREBOOT_CERT", 0x1: "EV_POST_CODE", 0x2: "EV_UNUSED", 0x3: "EV_NO_ACTION",
	0x4: "EV_SEPARATOR", 0x5: "EV_ACTION", 0x6: "EV_EVENT_TAG", 0x7: "EV_S_CRTM_CONTENTS",
	0x8: "EV_S_CRTM_VERSION", 0x9: "EV_CPU_MICROCODE", 0xa: "EV_PLATFORM_CONFIG_FLAGS",
	0xb: "EV_TABLE_OF_DEVICES", 0xc: "EV_COMPACT_HASH", 0xd: "EV_IPL", 0xe: "EV_IPL_PARTITION_DATA",
	0xf: "EV_NONHOST_CODE", 0x10: "EV_NONHOST_CONFIG", 0x11: "EV_NONHOST_INFO",
	0x12:       "EV_OMIT_BOOT_DEVICE_EVENTS",
	0x80000000: "EV_EFI_EVENT_BASE", 0x80000001: "EV_EFI_VARIABLE_DRIVER_CONFIG",
	0x80000002: "EV_EFI_VARIABLE_BOOT", 0x80000003: "EV_EFI_BOOT_SERVICES_APPLICATION",
	0x80000004: "EV_EFI_BOOT_SERVICES_DRIVER", 0x80000005: "EV_EFI_RUNTIME_SERVICES_DRIVER",
	0x80000006: "EV_EFI_GPT_EVENT", 0x80000007: "EV_EFI_ACTION",
	0x80000008: "EV_EFI_PLATFORM_FIRMWARE_BLOB", 0x80000009: "EV_EFI_HANDOFF_TABLES",
	0x8000000a: "EV_EFI_PLATFORM_FIRMWARE_BLOB2", 0x8000000b: "EV_EFI_HANDOFF_TABLES2",
	0x8000000c: "EV_EFI_VARIABLE_BOOT2", 0x80000010: "EV_EFI_HCRTM_EVENT",
	0x800000e0: "EV_EFI_VARIABLE_AUTHORITY", 0x800000e1: "EV_EFI_SPDM_FIRMWARE_BLOB",
	0x800000e2: "EV_EFI_SPDM_FIRMWARE_CONFIG",
}

// detailParsers decode the event data of the types Trustee interprets;
// other types get empty details.
var detailParsers = map[uint32]func([]byte) (map[string]any, error){
	0x1:        utf8Details, // EV_POST_CODE
	0x5:        utf8Details, // EV_ACTION
	0x6:        eventTagDetails,
	0xa:        platformConfigFlagsDetails,
	0xc:        utf8Details, // EV_COMPACT_HASH
	0xd:        iplDetails,
	0x12:       utf8Details, // EV_OMIT_BOOT_DEVICE_EVENTS
	0x80000001: efiVariableDetails,
	0x80000002: efiVariableDetails,
	0x80000003: bootServicesAppDetails,
	0x80000007: utf8Details,        // EV_EFI_ACTION
	0x8000000a: descriptionDetails, // EV_EFI_PLATFORM_FIRMWARE_BLOB2
	0x8000000b: descriptionDetails, // EV_EFI_HANDOFF_TABLES2
	0x8000000c: efiVariableDetails,
	0x800000e0: efiVariableDetails,
}

func parseDetails(typ uint32, data []byte) (map[string]any, error) {
	if parse, ok := detailParsers[typ]; ok {
		return parse(data)
	}
	return map[string]any{}, nil
}

func stringDetails(s string) map[string]any {
	return map[string]any{"string": s}
}

var errInvalidUTF8 = errors.New("event data is not UTF-8")

func utf8Details(data []byte) (map[string]any, error) {
	if !utf8.Valid(data) {
		return nil, errInvalidUTF8
	}
	return stringDetails(string(data)), nil
}

// descriptionDetails reads the description of UEFI_PLATFORM_FIRMWARE_BLOB2
// and UEFI_HANDOFF_TABLE_POINTERS2: a size byte, then the text whose last
// byte (its NUL) is dropped.
func descriptionDetails(data []byte) (map[string]any, error) {
	if len(data) == 0 || data[0] == 0 || len(data) < int(data[0]) {
		return nil, errors.New("description is truncated")
	}
	return utf8Details(data[1:data[0]])
}

// platformConfigFlagsDetails keeps the printable text of vendor-defined
// data: td-shim logs the kernel command line here.
func platformConfigFlagsDetails(data []byte) (map[string]any, error) {
	s := ""
	if utf8.Valid(data) {
		s = strings.ReplaceAll(string(data), "\x10", " ")
	}
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return -1
		}
		return r
	}, s)
	return stringDetails(s), nil
}

// aaelEventID tags the attestation agent's runtime events. The value is
// Trustee's, read as a little-endian UINT32 of the tagged event.
const aaelEventID = 0x4141454c

// eventTagDetails decodes TCG_PCClientTaggedEvent; runtime events of the
// attestation agent ("domain operation content") are split up.
func eventTagDetails(data []byte) (map[string]any, error) {
	c := &dcap.Cursor{B: data}
	id := c.U32()
	tagged := c.Take(int(c.U32()))
	if c.Err != nil {
		return nil, fmt.Errorf("tagged event: %v", c.Err)
	}
	d := stringDetails(strings.ReplaceAll(lossyUTF8(tagged), "\x00", ""))
	if id != aaelEventID {
		return d, nil
	}
	if !utf8.Valid(tagged) {
		return nil, errInvalidUTF8
	}
	aael, err := parseAAEL(string(tagged))
	if err != nil {
		return nil, err
	}
	d["data"], d["unicode_name"] = aael, "AAEL"
	return d, nil
}

func parseAAEL(s string) (map[string]any, error) {
	domain, rest, ok1 := strings.Cut(s, " ")
	operation, content, ok2 := strings.Cut(rest, " ")
	if !ok1 || !ok2 {
		return nil, errors.New("AAEL event is not \"domain operation content\"")
	}
	return map[string]any{"domain": domain, "operation": operation, "content": jsonOrString(content)}, nil
}

// jsonOrString returns content as JSON if it is one JSON value, keeping
// numbers exact, and as a string otherwise.
func jsonOrString(content string) any {
	dec := json.NewDecoder(strings.NewReader(content))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil || dec.InputOffset() != int64(len(strings.TrimRight(content, " \t\r\n"))) {
		return content
	}
	return v
}

// gceIPLPrefix starts the UTF-16 EV_IPL events of Google's firmware.
var gceIPLPrefix = []byte{0x2e, 0x00}

func iplDetails(data []byte) (map[string]any, error) {
	if len(data) < 2 {
		return nil, errors.New("EV_IPL data is shorter than 2 bytes")
	}
	if bytes.HasPrefix(data, gceIPLPrefix) {
		// Prefix, UTF-16 text, UTF-16 NUL.
		if len(data) < 4 || len(data)%2 != 0 {
			return nil, errors.New("EV_IPL data is not a UTF-16 string")
		}
		return stringDetails(lossyUTF16(data[2 : len(data)-2])), nil
	}
	text := data
	if i := bytes.IndexByte(data, 0); i >= 0 {
		text = data[:i]
	}
	if !utf8.Valid(text) {
		return stringDetails(hex.EncodeToString(data)), nil
	}
	return stringDetails(string(text)), nil
}

// efiVariableDetails decodes UEFI_VARIABLE_DATA.
func efiVariableDetails(data []byte) (map[string]any, error) {
	c := &dcap.Cursor{B: data}
	guid := c.Take(16)
	nameLen, dataLen := c.U64(), c.U64()
	if c.Err != nil || nameLen > uint64(len(c.B))/2 {
		return nil, errors.New("UEFI variable data is truncated")
	}
	name, err := strictUTF16(c.Take(int(nameLen * 2)))
	if err != nil {
		return nil, err
	}
	varData := ""
	if dataLen > 0 {
		if dataLen > uint64(len(c.B)) {
			return nil, errors.New("UEFI variable data is truncated")
		}
		varData = base64.StdEncoding.EncodeToString(c.Take(int(dataLen)))
	}
	return map[string]any{
		"unicode_name":         name,
		"unicode_name_length":  nameLen,
		"variable_data":        varData,
		"variable_data_length": dataLen,
		"variable_name":        fmt.Sprintf("%x-%x-%x-%x-%x", guid[0:4], guid[4:6], guid[6:8], guid[8:10], guid[10:16]),
	}, nil
}

// bootServicesAppDetails decodes the device path of UEFI_IMAGE_LOAD_EVENT,
// leaving out its end node.
func bootServicesAppDetails(data []byte) (map[string]any, error) {
	if len(data) < 32 {
		return nil, errors.New("image load event is truncated")
	}
	pathLen := binary.LittleEndian.Uint64(data[24:32])
	if pathLen == 0 {
		return map[string]any{}, nil
	}
	if pathLen < 8 || pathLen-4 > uint64(len(data)-32) {
		return nil, errors.New("device path length is out of range")
	}
	paths, err := devicePaths(data[32 : 32+pathLen-4])
	if err != nil {
		return nil, err
	}
	return map[string]any{"device_paths": paths}, nil
}

// lossyUTF8 replaces each maximal invalid subsequence with U+FFFD, as
// Rust's from_utf8_lossy does, so claims match Trustee's byte for byte.
func lossyUTF8(b []byte) string {
	if utf8.Valid(b) {
		return string(b)
	}
	var sb strings.Builder
	for len(b) > 0 {
		r, n := utf8.DecodeRune(b)
		if r == utf8.RuneError && n == 1 {
			sb.WriteRune(utf8.RuneError)
			b = b[invalidPrefixLen(b):]
			continue
		}
		sb.Write(b[:n])
		b = b[n:]
	}
	return sb.String()
}

// invalidPrefixLen is the length of the longest prefix of b that could start
// a valid UTF-8 sequence, at least 1.
func invalidPrefixLen(b []byte) int {
	lo, hi, need := byte(0x80), byte(0xbf), 0
	switch c := b[0]; {
	case c >= 0xc2 && c <= 0xdf:
		need = 1
	case c == 0xe0:
		lo, need = 0xa0, 2
	case c == 0xed:
		hi, need = 0x9f, 2
	case c >= 0xe1 && c <= 0xef:
		need = 2
	case c == 0xf0:
		lo, need = 0x90, 3
	case c == 0xf4:
		hi, need = 0x8f, 3
	case c >= 0xf1 && c <= 0xf3:
		need = 3
	}
	n := 1
	for ; n <= need && n < len(b); n++ {
		if b[n] < lo || b[n] > hi {
			break
		}
		lo, hi = 0x80, 0xbf
	}
	return n
}
