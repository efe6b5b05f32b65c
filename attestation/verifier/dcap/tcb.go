package dcap

import (
	"bytes"
	"fmt"
	"slices"
	"time"

	"github.com/google/go-tdx-guest/pcs"
)

// TCB statuses as Intel's quote verification library reports them and
// Trustee puts them in the tcb_status claim.
const (
	StatusUpToDate                          = "UpToDate"
	StatusSWHardeningNeeded                 = "SWHardeningNeeded"
	StatusConfigurationNeeded               = "ConfigurationNeeded"
	StatusConfigurationAndSWHardeningNeeded = "ConfigurationAndSWHardeningNeeded"
	StatusOutOfDate                         = "OutOfDate"
	StatusOutOfDateConfigurationNeeded      = "OutOfDateConfigurationNeeded"
	StatusTDRelaunchAdvised                 = "TDRelaunchAdvised"
	StatusTDRelaunchAdvisedConfigNeeded     = "TDRelaunchAdvisedConfigurationNeeded"
	StatusRevoked                           = "Revoked"
)

// TCBResult is the outcome of matching the platform against the collateral.
type TCBResult struct {
	Status     string
	Date       time.Time // the earliest date of the TCB levels that applied
	Advisories []string
}

// CheckQEIdentity compares the QE report with Intel's identity of the
// quoting enclave and returns the TCB level its ISV SVN reaches.
func CheckQEIdentity(r *EnclaveReport, id *pcs.EnclaveIdentity) (*pcs.TcbLevel, error) {
	misc := id.Miscselect.Bytes
	mask := id.MiscselectMask.Bytes
	for i := range 4 {
		if byte(r.MiscSelect>>(8*i))&mask[i] != misc[i] {
			return nil, fmt.Errorf("%w: MISCSELECT %08x", ErrQEIdentityMismatch, r.MiscSelect)
		}
	}
	for i, m := range id.AttributesMask.Bytes {
		if r.Attributes[i]&m != id.Attributes.Bytes[i] {
			return nil, fmt.Errorf("%w: attributes %x", ErrQEIdentityMismatch, r.Attributes)
		}
	}
	if !bytes.Equal(r.MrSigner[:], id.Mrsigner.Bytes) {
		return nil, fmt.Errorf("%w: MRSIGNER %x", ErrQEIdentityMismatch, r.MrSigner)
	}
	if r.ISVProdID != id.IsvProdID {
		return nil, fmt.Errorf("%w: ISVPRODID %d, want %d", ErrQEIdentityMismatch, r.ISVProdID, id.IsvProdID)
	}
	for i := range id.TcbLevels {
		if id.TcbLevels[i].Tcb.Isvsvn <= uint32(r.ISVSVN) {
			return &id.TcbLevels[i], nil
		}
	}
	return nil, fmt.Errorf("%w: QE ISVSVN %d is below every QE identity level", ErrTCBNotSupported, r.ISVSVN)
}

// QEStatus folds the QE level's status the way Intel's library does:
// anything but UpToDate and Revoked counts as OutOfDate.
func QEStatus(l *pcs.TcbLevel) string {
	switch s := string(l.TcbStatus); s {
	case StatusUpToDate, StatusRevoked:
		return s
	}
	return StatusOutOfDate
}

// SGXReaches reports whether the platform's PCK TCB reaches level l.
func SGXReaches(p *PlatformInfo, l *pcs.TcbLevel) bool {
	for i, c := range l.Tcb.SgxTcbcomponents {
		if p.SGXTCB[i] < c.Svn {
			return false
		}
	}
	return p.PCESVN >= l.Tcb.Pcesvn
}

// ConvergeQE folds the quoting enclave's status into the enclave's or TD's.
func ConvergeQE(td, qe string) string {
	switch qe {
	case StatusOutOfDate:
		return OutOfDate(td)
	case StatusRevoked:
		return StatusRevoked
	}
	return td
}

// OutOfDate downgrades a status when a component is out of date.
func OutOfDate(s string) string {
	switch s {
	case StatusUpToDate, StatusSWHardeningNeeded:
		return StatusOutOfDate
	case StatusConfigurationNeeded, StatusConfigurationAndSWHardeningNeeded:
		return StatusOutOfDateConfigurationNeeded
	}
	return s
}

// EarliestDate is the earlier of two TCB levels' dates.
func EarliestDate(platform, qe *pcs.TcbLevel) time.Time {
	// Both dates were checked to be RFC 3339 when the collateral was parsed.
	a, _ := time.Parse(time.RFC3339, platform.TcbDate)
	b, _ := time.Parse(time.RFC3339, qe.TcbDate)
	if b.Before(a) {
		return b
	}
	return a
}

// Advisories are the advisory ids of the levels that applied, once each.
func Advisories(levels ...*pcs.TcbLevel) []string {
	ids := []string{}
	for _, l := range levels {
		if l == nil {
			continue
		}
		for _, id := range l.AdvisoryIDs {
			if !slices.Contains(ids, id) {
				ids = append(ids, id)
			}
		}
	}
	return ids
}
