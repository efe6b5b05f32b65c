// Package tdx collects Intel TDX evidence inside the guest: a quote through
// configfs-tsm and the CC event log (the firmware's CCEL followed by the
// attestation agent's AAEL records), in guest-components' JSON form. It
// also extends RTMRs and reads MRCONFIGID through the tdx_guest sysfs
// measurements (kernel >= 6.16).
package tdx

import (
	"bytes"
	"context"
	"crypto"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	vtdx "github.com/cocoon-cc/cocoon/attestation/verifier/tdx"
	"github.com/cocoon-cc/cocoon/guest/attester/tsm"
	"github.com/cocoon-cc/cocoon/protocol"
)

// Kernel paths, below Options.Root.
const (
	CCELPath         = "/sys/firmware/acpi/tables/data/CCEL"
	MeasurementsPath = "/sys/devices/virtual/misc/tdx_guest/measurements"
)

const (
	reportDataSize = 64
	registerSize   = 48
)

// ErrMRConfigID reports an initdata digest other than the TD's MRCONFIGID.
var ErrMRConfigID = errors.New("tdx: initdata digest does not match MRCONFIGID")

// Options configure an Attester.
type Options struct {
	// Root prefixes every kernel path ("/" when empty).
	Root string
	// AAELPath is the attestation agent's event log, appended to the CCEL.
	AAELPath string
	// TSM overrides the configfs-tsm client (tests play the kernel).
	TSM *tsm.Client
}

// Attester produces TDX evidence.
type Attester struct {
	tsm          tsm.Client
	ccel         string
	aael         string
	measurements string
}

// New returns an attester; it touches no device until asked.
func New(o Options) *Attester {
	a := &Attester{tsm: tsm.Client{Root: filepath.Join(o.Root, tsm.DefaultRoot)},
		ccel: filepath.Join(o.Root, CCELPath), aael: o.AAELPath,
		measurements: filepath.Join(o.Root, MeasurementsPath)}
	if o.TSM != nil {
		a.tsm = *o.TSM
	}
	return a
}

// Tee implements attester.Attester.
func (*Attester) Tee() protocol.Tee { return protocol.TeeTDX }

// Evidence implements attester.Attester: reportData, zero-padded to 64
// bytes, in REPORTDATA.
func (a *Attester) Evidence(ctx context.Context, reportData []byte) (json.RawMessage, error) {
	quote, err := a.quote(ctx, reportData)
	if err != nil {
		return nil, err
	}
	log, err := a.eventLog()
	if err != nil {
		return nil, err
	}
	ev := struct {
		CCEventLog *string `json:"cc_eventlog"`
		Quote      string  `json:"quote"`
	}{Quote: base64.StdEncoding.EncodeToString(quote)}
	if log != nil {
		s := base64.StdEncoding.EncodeToString(log)
		ev.CCEventLog = &s
	}
	return json.Marshal(ev)
}

func (a *Attester) quote(ctx context.Context, reportData []byte) ([]byte, error) {
	if len(reportData) > reportDataSize {
		return nil, fmt.Errorf("tdx: report data of %d bytes exceeds %d", len(reportData), reportDataSize)
	}
	in := make([]byte, reportDataSize)
	copy(in, reportData)
	resp, err := a.tsm.Get(ctx, tsm.Request{Provider: "tdx_guest", InBlob: in})
	if err != nil {
		return nil, err
	}
	return resp.OutBlob, nil
}

// eventLog is the CCEL trimmed of its padding, then the AAEL records (after
// a Spec ID event when there is no CCEL), then an end marker; nil when
// there is neither.
func (a *Attester) eventLog() ([]byte, error) {
	ccel, err := readOptional(a.ccel)
	if err != nil {
		return nil, err
	}
	var aael []byte
	if a.aael != "" {
		if aael, err = readOptional(a.aael); err != nil {
			return nil, err
		}
	}
	if ccel == nil && aael == nil {
		return nil, nil
	}
	var log []byte
	if ccel != nil {
		if log, err = TrimCCEL(ccel); err != nil {
			return nil, err
		}
	} else {
		log = SpecIDEvent()
	}
	log = append(log, aael...)
	return append(log, bytes.Repeat([]byte{0xff}, 8)...), nil
}

func readOptional(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("tdx: %w", err)
	}
	return b, nil
}

// RuntimeRegister maps a PCR to its CC measurement register as
// guest-components does (1, 7 -> 1; 2-6 -> 2; 8-15 -> 3; else 4; RTMR n is
// CC MR n+1), hashed with SHA-384. errors.ErrUnsupported without the sysfs
// measurements interface.
func (a *Attester) RuntimeRegister(pcr uint64) (uint32, crypto.Hash, error) {
	if _, err := os.Stat(a.measurements); err != nil {
		return 0, 0, fmt.Errorf("tdx: no RTMR interface at %s: %w", a.measurements, errors.ErrUnsupported)
	}
	return ccMR(pcr), crypto.SHA384, nil
}

func ccMR(pcr uint64) uint32 {
	switch {
	case pcr == 1 || pcr == 7:
		return 1
	case pcr >= 2 && pcr <= 6:
		return 2
	case pcr >= 8 && pcr <= 15:
		return 3
	}
	return 4
}

// ExtendRuntimeRegister extends the RTMR of pcr with digest.
func (a *Attester) ExtendRuntimeRegister(_ context.Context, pcr uint64, digest []byte) error {
	if len(digest) != registerSize {
		return fmt.Errorf("tdx: RTMR extension of %d bytes, want %d", len(digest), registerSize)
	}
	name := fmt.Sprintf("rtmr%d:sha384", ccMR(pcr)-1)
	f, err := os.OpenFile(filepath.Join(a.measurements, name), os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("tdx: extend %s: %w", name, err)
	}
	_, err = f.Write(digest)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("tdx: extend %s: %w", name, err)
	}
	return nil
}

// BindInitData checks the digest, zero-padded to 48 bytes, against
// MRCONFIGID: from sysfs, else from a fresh quote.
func (a *Attester) BindInitData(ctx context.Context, digest []byte) error {
	mr, err := os.ReadFile(filepath.Join(a.measurements, "mrconfigid"))
	if errors.Is(err, fs.ErrNotExist) {
		mr, err = a.quotedMRConfigID(ctx)
	}
	if err != nil {
		return fmt.Errorf("tdx: read MRCONFIGID: %w", err)
	}
	want := make([]byte, registerSize)
	copy(want, digest)
	if !bytes.Equal(mr, want) {
		return ErrMRConfigID
	}
	return nil
}

func (a *Attester) quotedMRConfigID(ctx context.Context) ([]byte, error) {
	raw, err := a.quote(ctx, nil)
	if err != nil {
		return nil, err
	}
	q, err := vtdx.ParseQuote(raw)
	if err != nil {
		return nil, err
	}
	return q.Body.MrConfigID[:], nil
}

// SpecIDEvent is a TCG_EfiSpecIDEvent declaring SHA-384 digests, which
// starts a log that has no firmware CCEL before the AAEL records.
func SpecIDEvent() []byte {
	body := []byte("Spec ID Event03\x00")
	body = binary.LittleEndian.AppendUint32(body, 0) // platform class
	body = append(body, 0, 2, 0, 2)                  // spec 2.0, errata 0, UINTN 8 bytes
	body = binary.LittleEndian.AppendUint32(body, 1)
	body = binary.LittleEndian.AppendUint16(body, algSHA384)
	body = binary.LittleEndian.AppendUint16(body, registerSize)
	body = append(body, 0) // no vendor info
	ev := binary.LittleEndian.AppendUint32(nil, 0)
	ev = binary.LittleEndian.AppendUint32(ev, evNoAction)
	ev = append(ev, make([]byte, 20)...)
	ev = binary.LittleEndian.AppendUint32(ev, uint32(len(body)))
	return append(ev, body...)
}
