package csv

import (
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
)

// Evidence is Trustee's CSV evidence, its byte structures restored to the
// firmware's binary forms.
type Evidence struct {
	Report *Report
	// HSK and CEK are empty when the evidence does not carry them.
	HSK, CEK []byte
	PEK      []byte
	// Serial is the chip's serial number, NUL-padded to 64 bytes.
	Serial []byte
	// EventLog is the CC event log, if any.
	EventLog []byte
}

// ChipID is the serial number as Hygon's KDS names the chip.
func (e *Evidence) ChipID() string {
	n := len(e.Serial)
	for n > 0 && e.Serial[n-1] == 0 {
		n--
	}
	return string(e.Serial[:n])
}

// The JSON shapes are serde's default encoding of csv-rs's structures:
// byte arrays as arrays of numbers, newtypes as their number.
type (
	evidenceJSON struct {
		AttestationReport *struct {
			Magic byteList `json:"magic"`
			Flags *uint32  `json:"flags"`
			Data  byteList `json:"data"`
		} `json:"attestation_report"`
		CertChain *struct {
			HSKCEK *struct {
				HSK *caCertJSON  `json:"hsk"`
				CEK *csvCertJSON `json:"cek"`
			} `json:"hsk_cek"`
			PEK *csvCertJSON `json:"pek"`
		} `json:"cert_chain"`
		SerialNumber byteList `json:"serial_number"`
		CCEventLog   *string  `json:"cc_eventlog"`
	}
	eccKeyJSON struct {
		G uint32   `json:"g"`
		X byteList `json:"x"`
		Y byteList `json:"y"`
	}
	sigJSON struct {
		R byteList `json:"r"`
		S byteList `json:"s"`
	}
	caCertJSON struct {
		Body struct {
			Preamble struct {
				Ver  uint32 `json:"ver"`
				Data struct {
					KID      byteList `json:"kid"`
					SID      byteList `json:"sid"`
					Usage    uint32   `json:"usage"`
					Reserved byteList `json:"reserved"`
				} `json:"data"`
			} `json:"preamble"`
			PubKey   eccKeyJSON `json:"pubkey"`
			UIDSize  uint16     `json:"uid_size"`
			UserID   byteList   `json:"user_id"`
			Reserved byteList   `json:"reserved"`
		} `json:"body"`
		Signature sigJSON  `json:"signature"`
		Reserved  byteList `json:"_reserved"`
	}
	csvCertJSON struct {
		Body struct {
			Ver  uint32 `json:"ver"`
			Data struct {
				Firmware struct {
					Major uint8 `json:"major"`
					Minor uint8 `json:"minor"`
				} `json:"firmware"`
				Reserved1 uint16 `json:"reserved1"`
				PubKey    struct {
					Usage uint32     `json:"usage"`
					Algo  uint32     `json:"algo"`
					Key   eccKeyJSON `json:"key"`
				} `json:"pubkey"`
				UIDSize   uint16   `json:"uid_size"`
				UserID    byteList `json:"user_id"`
				SID       byteList `json:"sid"`
				Reserved2 byteList `json:"reserved2"`
			} `json:"data"`
		} `json:"body"`
		Sigs []struct {
			Usage     uint32   `json:"usage"`
			Algo      uint32   `json:"algo"`
			Signature sigJSON  `json:"signature"`
			Reserved  byteList `json:"_reserved"`
		} `json:"sigs"`
	}
)

// ParseEvidence reads Trustee's CSV evidence JSON.
func ParseEvidence(raw []byte) (*Evidence, error) {
	var j evidenceJSON
	if err := json.Unmarshal(raw, &j); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrEvidenceJSON, err)
	}
	ar := j.AttestationReport
	if ar == nil || ar.Flags == nil || j.CertChain == nil || j.CertChain.PEK == nil || j.SerialNumber == nil {
		return nil, fmt.Errorf("%w: attestation_report, cert_chain.pek and serial_number are required", ErrEvidenceJSON)
	}
	if len(ar.Magic) != 16 {
		return nil, fmt.Errorf("%w: magic of %d bytes", ErrEvidenceJSON, len(ar.Magic))
	}
	if len(j.SerialNumber) > serialSize {
		return nil, fmt.Errorf("%w: serial number of %d bytes", ErrEvidenceJSON, len(j.SerialNumber))
	}
	r, err := ParseReport(ar.Magic, *ar.Flags, ar.Data)
	if err != nil {
		return nil, err
	}
	ev := &Evidence{Report: r, Serial: make([]byte, serialSize)}
	copy(ev.Serial, j.SerialNumber)
	if ev.PEK, err = j.CertChain.PEK.binary(); err != nil {
		return nil, fmt.Errorf("%w: pek: %v", ErrEvidenceJSON, err)
	}
	if hc := j.CertChain.HSKCEK; hc != nil {
		if hc.HSK == nil || hc.CEK == nil {
			return nil, fmt.Errorf("%w: hsk_cek needs both hsk and cek", ErrEvidenceJSON)
		}
		if ev.HSK, err = hc.HSK.binary(); err != nil {
			return nil, fmt.Errorf("%w: hsk: %v", ErrEvidenceJSON, err)
		}
		if ev.CEK, err = hc.CEK.binary(); err != nil {
			return nil, fmt.Errorf("%w: cek: %v", ErrEvidenceJSON, err)
		}
	}
	if j.CCEventLog != nil {
		if ev.EventLog, err = base64.StdEncoding.DecodeString(*j.CCEventLog); err != nil {
			return nil, fmt.Errorf("%w: cc_eventlog: %v", ErrEvidenceJSON, err)
		}
	}
	return ev, nil
}

// builder lays out a binary structure, checking each array's length.
type builder struct {
	b   []byte
	err error
}

func (w *builder) u16(v uint16) { w.b = binary.LittleEndian.AppendUint16(w.b, v) }
func (w *builder) u32(v uint32) { w.b = binary.LittleEndian.AppendUint32(w.b, v) }

func (w *builder) bytes(name string, v byteList, n int) {
	if len(v) != n && w.err == nil {
		w.err = fmt.Errorf("%s has %d bytes, want %d", name, len(v), n)
	}
	w.b = append(w.b, v...)
}

func (w *builder) key(k *eccKeyJSON) {
	w.u32(k.G)
	w.bytes("x", k.X, ecPointSize)
	w.bytes("y", k.Y, ecPointSize)
}

func (w *builder) sig(s *sigJSON) {
	w.bytes("r", s.R, ecPointSize)
	w.bytes("s", s.S, ecPointSize)
}

func (c *caCertJSON) binary() ([]byte, error) {
	w := &builder{b: make([]byte, 0, caCertSize)}
	p := &c.Body.Preamble
	w.u32(p.Ver)
	w.bytes("kid", p.Data.KID, 16)
	w.bytes("sid", p.Data.SID, 16)
	w.u32(p.Data.Usage)
	w.bytes("reserved", p.Data.Reserved, 24)
	w.key(&c.Body.PubKey)
	w.u16(c.Body.UIDSize)
	w.bytes("user_id", c.Body.UserID, userIDSize)
	w.bytes("reserved", c.Body.Reserved, 108)
	w.sig(&c.Signature)
	w.bytes("_reserved", c.Reserved, 112)
	return w.b, w.err
}

func (c *csvCertJSON) binary() ([]byte, error) {
	if len(c.Sigs) != 2 {
		return nil, fmt.Errorf("%d signatures, want 2", len(c.Sigs))
	}
	w := &builder{b: make([]byte, 0, csvCertSize)}
	d := &c.Body.Data
	w.u32(c.Body.Ver)
	w.b = append(w.b, d.Firmware.Major, d.Firmware.Minor)
	w.u16(d.Reserved1)
	w.u32(d.PubKey.Usage)
	w.u32(d.PubKey.Algo)
	w.key(&d.PubKey.Key)
	w.u16(d.UIDSize)
	w.bytes("user_id", d.UserID, userIDSize)
	w.bytes("sid", d.SID, 16)
	w.bytes("reserved2", d.Reserved2, 608)
	for _, s := range c.Sigs {
		w.u32(s.Usage)
		w.u32(s.Algo)
		w.sig(&s.Signature)
		w.bytes("_reserved", s.Reserved, 368)
	}
	return w.b, w.err
}

// byteList is serde's encoding of a byte array: a JSON array of numbers.
type byteList []byte

// UnmarshalJSON reads [n, n, ...] with every n in 0..255, without the
// reflection encoding/json would spend on each element.
func (b *byteList) UnmarshalJSON(d []byte) error {
	if len(d) < 2 || d[0] != '[' || d[len(d)-1] != ']' {
		return fmt.Errorf("byte array is not a JSON array")
	}
	out := make([]byte, 0, len(d)/2)
	in := d[1 : len(d)-1]
	for i := 0; ; {
		for i < len(in) && isSpace(in[i]) {
			i++
		}
		if i == len(in) {
			if len(out) > 0 {
				return fmt.Errorf("byte array ends with a comma")
			}
			break
		}
		j, v := i, 0
		for j < len(in) && in[j] >= '0' && in[j] <= '9' && v <= 255 {
			v = v*10 + int(in[j]-'0')
			j++
		}
		if j == i || v > 255 || (j-i > 1 && in[i] == '0') {
			return fmt.Errorf("byte array element at %d is not a number in 0..255", i)
		}
		out = append(out, byte(v))
		for j < len(in) && isSpace(in[j]) {
			j++
		}
		if j == len(in) {
			break
		}
		if in[j] != ',' {
			return fmt.Errorf("byte array: unexpected %q", in[j])
		}
		i = j + 1
	}
	*b = out
	return nil
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }
