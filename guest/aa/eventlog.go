package aa

import (
	"crypto"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"unicode/utf8"
)

// DefaultEventLogPath is where guest-components keeps the AAEL log (and
// where its TDX attester reads it back, overridable with $AAEL_PATH).
const DefaultEventLogPath = "/run/attestation-agent/eventlog"

// ErrInvalidEvent reports an event the AAEL text form cannot carry.
var ErrInvalidEvent = errors.New("aa: invalid runtime event")

// Event is one AAEL entry, logged as the text "domain operation content".
type Event struct {
	Domain    string
	Operation string
	Content   string
}

// maxEventSize bounds one event's text; the log is replayed by verifiers.
const maxEventSize = 64 << 10

// Validate checks that the text form parses back into the same event:
// Trustee splits on the first two spaces and the log is line-oriented.
func (e Event) Validate() error {
	switch {
	case e.Domain == "" || e.Operation == "":
		return fmt.Errorf("%w: empty domain or operation", ErrInvalidEvent)
	case strings.ContainsAny(e.Domain, " \n\x00") || strings.ContainsAny(e.Operation, " \n\x00"):
		return fmt.Errorf("%w: domain and operation must not contain spaces, newlines or NULs", ErrInvalidEvent)
	case !utf8.ValidString(e.Domain) || !utf8.ValidString(e.Operation) || !utf8.ValidString(e.Content):
		return fmt.Errorf("%w: not UTF-8", ErrInvalidEvent)
	case strings.ContainsAny(e.Content, "\n\x00"):
		return fmt.Errorf("%w: content must not contain newlines or NULs", ErrInvalidEvent)
	case len(e.Domain)+len(e.Operation)+len(e.Content)+2 > maxEventSize:
		return fmt.Errorf("%w: longer than %d bytes", ErrInvalidEvent, maxEventSize)
	}
	return nil
}

func (e Event) String() string { return e.Domain + " " + e.Operation + " " + e.Content }

// TCG2 constants of an AAEL record.
const (
	evEventTag = 0x6
	// aaelTag is "AAEL" read as a big-endian number; it is stored
	// little-endian, so the bytes on disk are "LEAA".
	aaelTag = 0x4141454c
)

var tcgAlgIDs = map[crypto.Hash]uint16{crypto.SHA256: 0xb, crypto.SHA384: 0xc, crypto.SHA512: 0xd}

// Record is one TCG_PCR_EVENT2 carrying an EV_EVENT_TAG AAEL event:
// the bytes appended to the log and the digest extended into the register.
type Record struct {
	Bytes  []byte
	Digest []byte
}

// EncodeRecord builds the record of e for measurement register index
// (the CC MR index on TDX, the PCR on a TPM), hashed with h.
func EncodeRecord(e Event, index uint32, h crypto.Hash) (Record, error) {
	if err := e.Validate(); err != nil {
		return Record{}, err
	}
	alg, ok := tcgAlgIDs[h]
	if !ok || !h.Available() {
		return Record{}, fmt.Errorf("aa: event log hash %v unsupported", h)
	}
	text := e.String()
	data := binary.LittleEndian.AppendUint32(nil, aaelTag)
	data = binary.LittleEndian.AppendUint32(data, uint32(len(text)))
	data = append(data, text...)
	hh := h.New()
	hh.Write(data)
	digest := hh.Sum(nil)

	b := binary.LittleEndian.AppendUint32(nil, index)
	b = binary.LittleEndian.AppendUint32(b, evEventTag)
	b = binary.LittleEndian.AppendUint32(b, 1)
	b = binary.LittleEndian.AppendUint16(b, alg)
	b = append(b, digest...)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(data)))
	b = append(b, data...)
	return Record{Bytes: b, Digest: digest}, nil
}

// EventLog appends records to the AAEL file, durably. The caller
// serializes appends with the register extensions they record.
type EventLog struct {
	file *os.File
}

// OpenEventLog opens (creating it and its directory) the log at path for
// appending; records already there are kept, as after an agent restart.
func OpenEventLog(path string) (*EventLog, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("aa: event log: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("aa: event log: %w", err)
	}
	return &EventLog{file: f}, nil
}

// Append writes a record and syncs it to the medium.
func (l *EventLog) Append(r Record) error {
	if _, err := l.file.Write(r.Bytes); err != nil {
		return fmt.Errorf("aa: event log: %w", err)
	}
	if err := l.file.Sync(); err != nil {
		return fmt.Errorf("aa: event log: %w", err)
	}
	return nil
}

// Close closes the file.
func (l *EventLog) Close() error { return l.file.Close() }
