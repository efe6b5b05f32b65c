package tdx

import (
	"bytes"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"hash"

	"github.com/emmansun/gmsm/sm3"

	"github.com/cocoon-cc/cocoon/attestation/verifier/dcap"
)

// TCG algorithm identifiers (TCG Algorithm Registry) and the names Trustee
// gives them in claims.
const (
	algSHA1   = 0x4
	algSHA256 = 0xb
	algSHA384 = 0xc
	algSHA512 = 0xd
	algSM3    = 0x12
	// AlgSM3 is SM3's identifier: Hygon CSV logs measure with it.
	AlgSM3 = algSM3
)

var algNames = map[uint16]string{
	0x1: "RSA", 0x3: "TDES", algSHA1: "SHA-1", algSHA256: "SHA-256",
	algSHA384: "SHA-384", algSHA512: "SHA-512", algSM3: "SM3",
}

// digestSizes are the sizes a Spec ID event must declare for hash algorithms.
var digestSizes = map[uint16]uint16{algSHA1: 20, algSHA256: 32, algSHA384: 48, algSHA512: 64, algSM3: 32}

// The first event of a crypto-agile log is an EV_NO_ACTION event in the
// SHA-1 format, TCG_EfiSpecIDEvent, starting with this signature.
const (
	evNoAction = 0x3
	sha1Size   = 20
)

var specIDSignature = []byte("Spec ID Event03\x00")

// EventLog is a parsed TCG2 crypto-agile event log, such as the TDX CC
// event log (CCEL) and the runtime events guest-components append to it.
type EventLog struct {
	Events []Event
}

// Event is one measured event. Index is the CC measurement register index:
// 0 is MRTD, 1 to 4 are RTMR0 to RTMR3.
type Event struct {
	Index   uint32
	Type    uint32
	Digests []Digest
	Data    []byte
	// Details are the parsed event data, keyed as Trustee's claims are.
	Details map[string]any
	// DigestMatchesEvent reports that every digest is the hash of Data.
	// Many events measure something else than their data, so false is normal.
	DigestMatchesEvent bool
}

// Digest is one digest of an event.
type Digest struct {
	Alg   uint16
	Value []byte
}

// ParseEventLog parses a crypto-agile event log. Parsing stops at the end
// of the data or at padding (an event header of all zeros or all ones).
func ParseEventLog(b []byte) (*EventLog, error) {
	p := &logParser{c: dcap.Cursor{B: b}}
	if err := p.specID(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrEventLogFormat, err)
	}
	log := &EventLog{}
	for len(p.c.B) > 0 {
		if len(p.c.B) < 8 {
			return nil, fmt.Errorf("%w: %d trailing bytes", ErrEventLogFormat, len(p.c.B))
		}
		if head := binary.LittleEndian.Uint64(p.c.B); head == 0 || head == ^uint64(0) {
			break
		}
		ev, err := p.event()
		if err != nil {
			return nil, fmt.Errorf("%w: event %d: %v", ErrEventLogFormat, len(log.Events), err)
		}
		log.Events = append(log.Events, ev)
	}
	return log, nil
}

type logParser struct {
	c     dcap.Cursor
	sizes map[uint16]uint16 // digest sizes from the Spec ID event
}

// specID parses the first event, TCG_EfiSpecIDEvent in the legacy format,
// which declares the digest algorithms of the following events.
func (p *logParser) specID() error {
	p.c.U32() // MR index
	typ := p.c.U32()
	p.c.Take(sha1Size)
	data := &dcap.Cursor{B: p.c.Take(int(p.c.U32()))}
	if p.c.Err != nil {
		return p.c.Err
	}
	sig := data.Take(len(specIDSignature))
	// guest-components' attestation agent, starting a log where the guest
	// has no CCEL, writes the header with an all-zero signature: accept it
	// as Trustee does, the declared algorithms are what matter.
	if typ != evNoAction || !(bytes.Equal(sig, specIDSignature) || bytes.Equal(sig, make([]byte, len(specIDSignature)))) {
		return fmt.Errorf("first event is not a Spec ID event")
	}
	data.Take(8) // platform class, spec version, errata, uintn size
	n := data.U32()
	p.sizes = make(map[uint16]uint16)
	for i := uint32(0); i < n && data.Err == nil; i++ {
		alg, size := data.U16(), data.U16()
		if _, ok := algNames[alg]; !ok && data.Err == nil {
			return fmt.Errorf("unknown digest algorithm %#x", alg)
		}
		if want, ok := digestSizes[alg]; ok && want != size {
			return fmt.Errorf("algorithm %#x declared with %d-byte digests", alg, size)
		}
		p.sizes[alg] = size
	}
	vendor := data.Take(1)
	if vendor != nil {
		data.Take(int(vendor[0]))
	}
	return dcap.ExactlyConsumed(data)
}

// event parses one TCG_PCR_EVENT2.
func (p *logParser) event() (Event, error) {
	ev := Event{Index: p.c.U32(), Type: p.c.U32()}
	if _, ok := eventTypeNames[ev.Type]; !ok && p.c.Err == nil {
		return ev, fmt.Errorf("unknown event type %#x", ev.Type)
	}
	n := p.c.U32()
	for i := uint32(0); i < n && p.c.Err == nil; i++ {
		alg := p.c.U16()
		size, ok := p.sizes[alg]
		if !ok && p.c.Err == nil {
			return ev, fmt.Errorf("digest algorithm %#x not declared in the Spec ID event", alg)
		}
		ev.Digests = append(ev.Digests, Digest{Alg: alg, Value: p.c.Take(int(size))})
	}
	ev.Data = p.c.Take(int(p.c.U32()))
	if p.c.Err != nil {
		return ev, p.c.Err
	}
	var err error
	if ev.DigestMatchesEvent, err = digestsMatch(ev.Data, ev.Digests); err != nil {
		return ev, err
	}
	if ev.Details, err = parseDetails(ev.Type, ev.Data); err != nil {
		return ev, fmt.Errorf("%s: %v", eventTypeNames[ev.Type], err)
	}
	return ev, nil
}

func digestsMatch(data []byte, digests []Digest) (bool, error) {
	for _, d := range digests {
		h, err := newHash(d.Alg)
		if err != nil {
			return false, err
		}
		h.Write(data)
		if !bytes.Equal(h.Sum(nil), d.Value) {
			return false, nil
		}
	}
	return true, nil
}

func newHash(alg uint16) (hash.Hash, error) {
	switch alg {
	case algSHA256:
		return sha256.New(), nil
	case algSHA384:
		return sha512.New384(), nil
	case algSHA512:
		return sha512.New(), nil
	case algSM3:
		return sm3.New(), nil
	}
	return nil, fmt.Errorf("unsupported digest algorithm %s", algNames[alg])
}

// ReplayRTMRs recomputes RTMR0 to RTMR3 from the events of CC MR indexes 1
// to 4 (see Replay with SHA-384).
func (l *EventLog) ReplayRTMRs() ([4][48]byte, error) {
	var rtmrs [4][48]byte
	regs, err := l.Replay(algSHA384)
	for i := range regs {
		copy(rtmrs[i][:], regs[i])
	}
	return rtmrs, err
}

// Replay recomputes the registers of CC MR indexes 1 to 4 with hash alg:
// register = H(register || digest) from zero, in log order. Every event of
// those indexes must carry a digest of alg, otherwise it would show up in
// the claims without being covered by the registers.
func (l *EventLog) Replay(alg uint16) ([4][]byte, error) {
	var regs [4][]byte
	h, err := newHash(alg)
	if err != nil {
		return regs, fmt.Errorf("%w: %v", ErrEventLogFormat, err)
	}
	for i := range regs {
		regs[i] = make([]byte, h.Size())
	}
	for i, ev := range l.Events {
		if ev.Index < 1 || ev.Index > 4 {
			continue
		}
		extended := false
		for _, d := range ev.Digests {
			if d.Alg != alg {
				continue
			}
			h.Reset()
			h.Write(regs[ev.Index-1])
			h.Write(d.Value)
			regs[ev.Index-1] = h.Sum(regs[ev.Index-1][:0])
			extended = true
		}
		if !extended {
			return regs, fmt.Errorf("%w: event %d for register %d has no %s digest", ErrEventLogFormat, i, ev.Index, algNames[alg])
		}
	}
	return regs, nil
}

// Claims renders the log as Trustee's uefi_event_logs claim.
func (l *EventLog) Claims() []any {
	out := make([]any, len(l.Events))
	for i, ev := range l.Events {
		digests := make([]any, len(ev.Digests))
		for j, d := range ev.Digests {
			digests[j] = map[string]any{"alg": algNames[d.Alg], "digest": hex.EncodeToString(d.Value)}
		}
		out[i] = map[string]any{
			"index":                ev.Index,
			"type_name":            eventTypeNames[ev.Type],
			"digests":              digests,
			"event":                base64.StdEncoding.EncodeToString(ev.Data),
			"details":              ev.Details,
			"digest_matches_event": ev.DigestMatchesEvent,
		}
	}
	return out
}
