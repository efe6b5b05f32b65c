package ovmf

import (
	"encoding/binary"
	"fmt"

	"github.com/google/uuid"
)

// GUID is an EFI GUID in its in-memory byte order: the first three fields
// little-endian, the last eight bytes as written.
type GUID [16]byte

// ParseGUID reads the canonical text form, e.g.
// "96b582de-1fb2-45f7-baea-a366c55a082d".
func ParseGUID(s string) (GUID, error) {
	u, err := uuid.Parse(s)
	if err != nil {
		return GUID{}, fmt.Errorf("GUID %q: %w", s, err)
	}
	var g GUID
	binary.LittleEndian.PutUint32(g[0:], binary.BigEndian.Uint32(u[0:]))
	binary.LittleEndian.PutUint16(g[4:], binary.BigEndian.Uint16(u[4:]))
	binary.LittleEndian.PutUint16(g[6:], binary.BigEndian.Uint16(u[6:]))
	copy(g[8:], u[8:])
	return g, nil
}

// MustParseGUID is ParseGUID for constants.
func MustParseGUID(s string) GUID {
	g, err := ParseGUID(s)
	if err != nil {
		panic(err)
	}
	return g
}

func (g GUID) String() string {
	var u uuid.UUID
	binary.BigEndian.PutUint32(u[0:], binary.LittleEndian.Uint32(g[0:]))
	binary.BigEndian.PutUint16(u[4:], binary.LittleEndian.Uint16(g[4:]))
	binary.BigEndian.PutUint16(u[6:], binary.LittleEndian.Uint16(g[6:]))
	copy(u[8:], g[8:])
	return u.String()
}
