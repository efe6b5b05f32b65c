package tdx

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"unicode/utf16"
	"unicode/utf8"
)

// devicePaths splits an EFI device path into nodes and renders each the way
// Trustee does (a subset of the UEFI text device node forms). Nodes Trustee
// does not render become Path(type,subtype,hexdata).
func devicePaths(b []byte) ([]any, error) {
	var out []any
	for len(b) > 0 {
		if len(b) < 4 {
			return nil, errors.New("device path node header is truncated")
		}
		n := int(binary.LittleEndian.Uint16(b[2:4]))
		if n < 4 || n > len(b) {
			return nil, fmt.Errorf("device path node length %d is out of range", n)
		}
		out = append(out, devicePathNode(b[0], b[1], b[4:n]))
		b = b[n:]
	}
	return out, nil
}

func devicePathNode(typ, sub byte, data []byte) string {
	if f, ok := nodeFormatters[[2]byte{typ, sub}]; ok {
		if s, err := f(data); err == nil {
			return s
		}
	}
	return fmt.Sprintf("Path(%d,%d,%x)", typ, sub, data)
}

var errShortNode = errors.New("device path node is too short")

var nodeFormatters = map[[2]byte]func([]byte) (string, error){
	{1, 1}:    pciNode,
	{2, 1}:    acpiNode,
	{3, 5}:    usbNode,
	{3, 0x0b}: macNode,
	{3, 0x0c}: ipv4Node,
	{3, 0x15}: fibreExNode,
	{4, 1}:    hardDriveNode,
	{4, 3}:    vendorMediaNode,
	{4, 4}:    filePathNode,
	{5, 1}:    bbsNode,
}

func pciNode(d []byte) (string, error) {
	if len(d) < 2 {
		return "", errShortNode
	}
	return fmt.Sprintf("Pci(%d,%d)", d[0], d[1]), nil
}

func acpiNode(d []byte) (string, error) {
	if len(d) < 8 {
		return "", errShortNode
	}
	hid, uid := binary.LittleEndian.Uint32(d), binary.LittleEndian.Uint32(d[4:])
	// The low 16 bits of a _HID compress three letters, 5 bits each.
	eisa := []byte{byte(hid>>10&0x1f) + '@', byte(hid>>5&0x1f) + '@', byte(hid&0x1f) + '@'}
	return fmt.Sprintf("ACPI(%s%04X,%d)", eisa, hid>>16, uid), nil
}

func usbNode(d []byte) (string, error) {
	if len(d) < 2 {
		return "", errShortNode
	}
	return fmt.Sprintf("USB(%d,%d)", d[0], d[1]), nil
}

func macNode(d []byte) (string, error) {
	if len(d) != 33 {
		return "", errShortNode
	}
	mac := strings.ToUpper(strings.TrimRight(hex.EncodeToString(d[:31]), "0"))
	return fmt.Sprintf("Mac(%s,0x%02x)", mac, d[32]), nil
}

func ipv4Node(d []byte) (string, error) {
	if len(d) < 23 {
		return "", errShortNode
	}
	protocol := map[uint16]string{6: "TCP", 17: "UDP"}[binary.LittleEndian.Uint16(d[12:])]
	origin := map[byte]string{0: "DHCP", 1: "Static"}[d[14]]
	gateway, mask := binary.LittleEndian.Uint32(d[15:]), binary.LittleEndian.Uint32(d[19:])
	extra := ""
	if gateway != 0 || mask != 0 {
		extra = fmt.Sprintf(",%d,%d", gateway, mask)
	}
	return fmt.Sprintf("IPv4(%s,%s,%s,%s%s)", reversedIPv4(d[4:8]), protocol, origin, reversedIPv4(d[0:4]), extra), nil
}

// reversedIPv4 prints an address stored least significant byte first, as
// Trustee reads it.
func reversedIPv4(b []byte) string {
	return fmt.Sprintf("%d.%d.%d.%d", b[3], b[2], b[1], b[0])
}

func fibreExNode(d []byte) (string, error) {
	if len(d) < 16 {
		return "", errShortNode
	}
	return fmt.Sprintf("FibreEx(0x%x,0x%x)", d[0:8], d[8:16]), nil
}

func hardDriveNode(d []byte) (string, error) {
	if len(d) < 38 {
		return "", errShortNode
	}
	number := binary.LittleEndian.Uint32(d)
	start, size := binary.LittleEndian.Uint64(d[4:]), binary.LittleEndian.Uint64(d[12:])
	var format, signature string
	switch d[36] {
	case 1:
		format, signature = "MBR", fmt.Sprintf("0x%08x", binary.LittleEndian.Uint32(d[20:]))
	case 2:
		format, signature = "GPT", uefiGUID(d[20:36])
	default:
		return "", fmt.Errorf("partition format %d", d[36])
	}
	if number == 0 {
		return fmt.Sprintf("HD(0,%s,%s)", format, signature), nil
	}
	return fmt.Sprintf("HD(%d,%s,%s,%#x,%#x)", number, format, signature, start, size), nil
}

func vendorMediaNode(d []byte) (string, error) {
	if len(d) < 16 {
		return "", errShortNode
	}
	return fmt.Sprintf("VenMedia(%s,%x)", uefiGUID(d[:16]), d[16:]), nil
}

func filePathNode(d []byte) (string, error) {
	if len(d) == 0 || len(d)%2 != 0 {
		return "", errShortNode
	}
	return fmt.Sprintf("File(%s)", lossyUTF16(d[:len(d)-2])), nil
}

var bbsDeviceTypes = map[uint16]string{
	1: "FLOPPY", 2: "HARD_DRIVE", 3: "CDROM", 4: "PCMCIA", 5: "USB", 6: "EMBEDDED_NETWORK", 0x80: "DEV", 0xff: "UNKNOWN",
}

func bbsNode(d []byte) (string, error) {
	if len(d) < 4 {
		return "", errShortNode
	}
	devType := bbsDeviceTypes[binary.LittleEndian.Uint16(d)]
	if devType == "" {
		devType = fmt.Sprint(binary.LittleEndian.Uint16(d))
	}
	desc := d[4:]
	if i := strings.IndexByte(string(desc), 0); i >= 0 {
		desc = desc[:i]
	}
	if !utf8.Valid(desc) {
		return "", errInvalidUTF8
	}
	return fmt.Sprintf("BBS(%s,%s,%d)", devType, desc, binary.LittleEndian.Uint16(d[2:])), nil
}

// uefiGUID formats a GUID stored in the UEFI mixed-endian layout.
func uefiGUID(g []byte) string {
	return fmt.Sprintf("%08X-%04X-%04X-%X-%X", binary.LittleEndian.Uint32(g), binary.LittleEndian.Uint16(g[4:]),
		binary.LittleEndian.Uint16(g[6:]), g[8:10], g[10:16])
}

func utf16Units(b []byte) []uint16 {
	u := make([]uint16, len(b)/2)
	for i := range u {
		u[i] = binary.LittleEndian.Uint16(b[2*i:])
	}
	return u
}

// lossyUTF16 decodes UTF-16LE, replacing unpaired surrogates with U+FFFD.
func lossyUTF16(b []byte) string {
	return string(utf16.Decode(utf16Units(b)))
}

// strictUTF16 decodes UTF-16LE and rejects unpaired surrogates.
func strictUTF16(b []byte) (string, error) {
	u := utf16Units(b)
	for i := 0; i < len(u); i++ {
		switch {
		case utf16.IsSurrogate(rune(u[i])) && u[i] < 0xdc00 && i+1 < len(u) && u[i+1] >= 0xdc00 && u[i+1] <= 0xdfff:
			i++
		case utf16.IsSurrogate(rune(u[i])):
			return "", errors.New("unpaired UTF-16 surrogate")
		}
	}
	return string(utf16.Decode(u)), nil
}
