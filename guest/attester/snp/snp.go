// Package snp collects AMD SEV-SNP evidence inside the guest: an extended
// attestation report with the host's certificate table, through
// configfs-tsm or else /dev/sev-guest, in the JSON form guest-components'
// SNP attester produces and Trustee (and attestation/verifier/snp) read.
package snp

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"

	"github.com/google/go-sev-guest/abi"
	"github.com/google/go-sev-guest/client"

	vsnp "github.com/cocoon-cc/cocoon/attestation/verifier/snp"
	"github.com/cocoon-cc/cocoon/guest/attester/tsm"
	"github.com/cocoon-cc/cocoon/protocol"
)

// DefaultDevice is the SNP guest driver's device.
const DefaultDevice = "/dev/sev-guest"

// ReportDataSize is the width of the report's REPORT_DATA.
const ReportDataSize = 64

// ErrHostData reports an initdata digest other than the report's HOST_DATA.
var ErrHostData = errors.New("snp: initdata digest does not match HOST_DATA")

// Options configure an Attester.
type Options struct {
	// Root prefixes the configfs-tsm and device paths ("/" when empty).
	Root string
	// TSM overrides the configfs-tsm client (tests play the kernel).
	TSM *tsm.Client
}

// Attester produces SNP evidence at VMPL 0.
type Attester struct {
	tsm    tsm.Client
	device string
}

// New returns an attester; it touches no device until asked for evidence.
func New(o Options) *Attester {
	a := &Attester{tsm: tsm.Client{Root: filepath.Join(o.Root, tsm.DefaultRoot)},
		device: filepath.Join(o.Root, DefaultDevice)}
	if o.TSM != nil {
		a.tsm = *o.TSM
	}
	return a
}

// Tee implements attester.Attester.
func (*Attester) Tee() protocol.Tee { return protocol.TeeSNP }

// Evidence implements attester.Attester: reportData, zero-padded to 64
// bytes, in REPORT_DATA, with the certificate table's VCEK/VLEK, ASK, ARK.
func (a *Attester) Evidence(ctx context.Context, reportData []byte) (json.RawMessage, error) {
	raw, table, err := a.extendedReport(ctx, reportData)
	if err != nil {
		return nil, err
	}
	return evidence(raw, table)
}

func (a *Attester) extendedReport(ctx context.Context, reportData []byte) (report, certs []byte, err error) {
	if len(reportData) > ReportDataSize {
		return nil, nil, fmt.Errorf("snp: report data of %d bytes exceeds %d", len(reportData), ReportDataSize)
	}
	var rd [ReportDataSize]byte
	copy(rd[:], reportData)
	vmpl := uint(0)
	resp, err := a.tsm.Get(ctx, tsm.Request{Provider: "sev_guest", InBlob: rd[:], PrivLevel: &vmpl, AuxBlob: true})
	if err == nil {
		return resp.OutBlob, resp.AuxBlob, nil
	}
	if !errors.Is(err, tsm.ErrUnavailable) {
		return nil, nil, err
	}
	return a.ioctlReport(rd)
}

// ioctlReport asks /dev/sev-guest for SNP_GET_EXT_REPORT, for kernels
// without configfs-tsm.
func (a *Attester) ioctlReport(rd [ReportDataSize]byte) (report, certs []byte, err error) {
	d := &client.LinuxDevice{}
	if err := d.Open(a.device); err != nil {
		return nil, nil, fmt.Errorf("snp: neither configfs-tsm nor %s: %w", a.device, err)
	}
	defer d.Close()
	//lint:ignore SA1019 the quote providers choose configfs-tsm first; this path exists for kernels without it
	report, certs, err = client.GetRawExtendedReportAtVmpl(d, rd, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("snp: extended report: %w", err)
	}
	return report, certs, nil
}

// evidence assembles the JSON evidence from a raw report and the host's
// GUID-indexed certificate table (empty when the host provides none).
func evidence(raw, table []byte) (json.RawMessage, error) {
	if len(raw) > abi.ReportSize {
		raw = raw[:abi.ReportSize] // the ioctl buffer may be larger
	}
	r, err := vsnp.ParseReport(raw)
	if err != nil {
		return nil, err
	}
	ev := &vsnp.Evidence{Report: r}
	if len(bytes.Trim(table, "\x00")) > 0 {
		var t abi.CertTable
		if err := t.Unmarshal(table); err != nil {
			return nil, fmt.Errorf("snp: certificate table: %w", err)
		}
		for _, e := range []struct {
			guid string
			dst  *[]byte
		}{{abi.VcekGUID, &ev.Certs.VCEK}, {abi.VlekGUID, &ev.Certs.VLEK}, {abi.AskGUID, &ev.Certs.ASK}, {abi.ArkGUID, &ev.Certs.ARK}} {
			*e.dst, _ = t.GetByGUIDString(e.guid)
		}
	}
	return json.Marshal(ev)
}

// BindInitData checks the digest, zero-padded to 32 bytes, against the
// HOST_DATA of a fresh report: the host set it at launch.
func (a *Attester) BindInitData(ctx context.Context, digest []byte) error {
	raw, _, err := a.extendedReport(ctx, nil)
	if err != nil {
		return err
	}
	if len(raw) < abi.ReportSize {
		return fmt.Errorf("snp: report of %d bytes", len(raw))
	}
	r, err := vsnp.ParseReport(raw[:abi.ReportSize])
	if err != nil {
		return err
	}
	var want [32]byte
	copy(want[:], digest)
	if !bytes.Equal(r.Proto().GetHostData(), want[:]) {
		return ErrHostData
	}
	return nil
}
