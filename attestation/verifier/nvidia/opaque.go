package nvidia

import (
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/crypto/cryptobyte"
)

// NVIDIA's opaque data is a list of (type u16, size u16, data) items; the
// names are nvtrust's, the value forms those Trustee's verifier gives.
var opaqueNames = map[uint16]string{
	1: "cert_issuer_name", 2: "cert_authority_key_identifier", 3: "driver_version", 4: "gpu_info",
	5: "id_sku", 6: "vbios_version", 7: "manufacturer_id", 8: "tamper_detection", 9: "smc", 10: "vpr",
	11: "nvdec0_status", 12: "measurement_count", 13: "cpr_info", 14: "board_id", 15: "chip_sku",
	16: "chip_sku_mod", 17: "project", 18: "project_sku", 19: "project_sku_mod", 20: "fwid",
	21: "protected_pcie_status", 22: "switch_pdi", 23: "floorswept_ports", 24: "position_id",
	25: "lock_switch_status", 32: "gpu_link_conn", 33: "sys_enable_status", 34: "opaque_data_version",
	35: "chip_info", 36: "feature_flag",
}

// textTypes are NUL-padded strings.
var textTypes = map[uint16]bool{3: true, 11: true, 15: true, 16: true, 17: true, 18: true, 21: true, 35: true}

func parseOpaque(s cryptobyte.String) (map[string]any, error) {
	out := map[string]any{}
	for !s.Empty() {
		var tb []byte
		var data cryptobyte.String
		if !s.ReadBytes(&tb, 2) || !readUint16LEBytes(&s, &data) {
			return nil, fmt.Errorf("%w: truncated item", ErrOpaqueData)
		}
		typ := binary.LittleEndian.Uint16(tb)
		name, ok := opaqueNames[typ]
		if !ok {
			return nil, fmt.Errorf("%w: unknown type %d", ErrOpaqueData, typ)
		}
		if _, dup := out[name]; dup {
			return nil, fmt.Errorf("%w: %s twice", ErrOpaqueData, name)
		}
		v, err := opaqueValue(typ, data)
		if err != nil {
			return nil, fmt.Errorf("%w: %s: %v", ErrOpaqueData, name, err)
		}
		out[name] = v
	}
	// The firmware versions are what a GPU's TCB is judged by.
	if out["vbios_version"] == nil || out["driver_version"] == nil {
		return nil, fmt.Errorf("%w: vbios_version and driver_version are required", ErrOpaqueData)
	}
	return out, nil
}

func opaqueValue(typ uint16, b []byte) (any, error) {
	switch {
	case textTypes[typ]:
		return strings.TrimRight(string(b), "\x00"), nil
	case typ == 6:
		return vbiosVersion(b)
	case typ == 12:
		return measurementCounts(b)
	case typ == 22:
		return chunks(b, 8)
	case typ == 34:
		return leUint(b)
	case typ == 36:
		v, err := leUint(b)
		if name, ok := map[uint64]string{0: "SPT", 1: "MPT", 2: "PPCIE"}[v]; ok {
			return name, err
		}
		return "unknown", err
	}
	return hex.EncodeToString(b), nil
}

// vbiosVersion: the first half reversed, then the first byte of the second
// half, in hex with dots: 00 9f 00 96 01 00 00 00 is 96.00.9f.00.01.
func vbiosVersion(b []byte) (string, error) {
	if len(b) < 2 {
		return "", fmt.Errorf("%d bytes", len(b))
	}
	half := b[:len(b)/2]
	parts := make([]string, 0, len(half)+1)
	for i := len(half) - 1; i >= 0; i-- {
		parts = append(parts, hex.EncodeToString(half[i:i+1]))
	}
	return strings.Join(append(parts, hex.EncodeToString(b[len(b)/2:len(b)/2+1])), "."), nil
}

// measurementCounts are little-endian u32s, one per measurement index
// from 1.
func measurementCounts(b []byte) (map[string]any, error) {
	if len(b)%4 != 0 {
		return nil, fmt.Errorf("%d bytes, not a multiple of 4", len(b))
	}
	m := make(map[string]any, len(b)/4)
	for i := 0; i < len(b); i += 4 {
		m[strconv.Itoa(i/4+1)] = int64(binary.LittleEndian.Uint32(b[i:]))
	}
	return m, nil
}

func chunks(b []byte, n int) ([]any, error) {
	if len(b)%n != 0 {
		return nil, fmt.Errorf("%d bytes, not a multiple of %d", len(b), n)
	}
	out := make([]any, 0, len(b)/n)
	for i := 0; i < len(b); i += n {
		out = append(out, hex.EncodeToString(b[i:i+n]))
	}
	return out, nil
}

func leUint(b []byte) (uint64, error) {
	if len(b) > 8 {
		return 0, fmt.Errorf("%d bytes integer", len(b))
	}
	var p [8]byte
	copy(p[:], b)
	return binary.LittleEndian.Uint64(p[:]), nil
}
