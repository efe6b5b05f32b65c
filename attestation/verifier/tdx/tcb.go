package tdx

import (
	"bytes"
	"fmt"
	"slices"
	"strings"
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
	statusRevoked                           = "Revoked"
)

// tcbResult is the outcome of matching the platform against the collateral.
type tcbResult struct {
	status     string
	date       time.Time // the earlier of the TDX and QE TCB levels' dates
	advisories []string
}

// evaluateTCB follows the TDX path of Intel's quote verification library:
// TDX module identity, QE identity, TCB level matching, then converging the
// platform, module and QE statuses into one.
func evaluateTCB(q *Quote, p *platformInfo, c *collateral) (*tcbResult, error) {
	module, err := checkTDXModule(q, &c.tcbInfo)
	if err != nil {
		return nil, err
	}
	qe, err := checkQEIdentity(&q.QEReport, &c.qeIdentity)
	if err != nil {
		return nil, err
	}
	sgxLevel, tdxLevel := matchTCBLevels(c.tcbInfo.TcbLevels, p, q.Body.TeeTCBSVN)
	if sgxLevel == nil || tdxLevel == nil {
		return nil, fmt.Errorf("%w: PCK TCB %x pcesvn %d, TEE TCB SVN %x", ErrTCBNotSupported,
			p.sgxTCB, p.pceSVN, q.Body.TeeTCBSVN)
	}
	moduleLevel, err := tdxModuleLevel(module, q.Body.TeeTCBSVN)
	if err != nil {
		return nil, err
	}
	status := string(tdxLevel.TcbStatus)
	if moduleLevel != nil {
		status = convergeModule(status, string(moduleLevel.TcbStatus))
	}
	if status != statusRevoked && q.BodyType == bodyTypeTD15 {
		status = relaunchStatus(q.Body.TeeTCBSVN2, &c.tcbInfo, string(sgxLevel.TcbStatus), status, moduleLevel, qeStatus(qe))
	}
	status = convergeQE(status, qeStatus(qe))
	if status == statusRevoked {
		return nil, fmt.Errorf("%w: TCB level %s", ErrTCBRevoked, tdxLevel.TcbDate)
	}
	return &tcbResult{
		status:     status,
		date:       earliestDate(tdxLevel, qe),
		advisories: advisories(tdxLevel, moduleLevel, qe),
	}, nil
}

// checkTDXModule compares the quote's SEAM signer and attributes with the
// TCB info. A module of major version 0 is described by tdxModule, later
// ones by the identity "TDX_<version>"; the identity is returned.
func checkTDXModule(q *Quote, info *pcs.TcbInfo) (*pcs.TdxModuleIdentity, error) {
	mrsigner, attributes := info.TdxModule.Mrsigner.Bytes, info.TdxModule.Attributes.Bytes
	var identity *pcs.TdxModuleIdentity
	if version := q.Body.TeeTCBSVN[1]; version > 0 {
		if identity = findModuleIdentity(info, version); identity == nil {
			return nil, fmt.Errorf("%w: no identity TDX_%02X", ErrTDXModuleMismatch, version)
		}
		mrsigner, attributes = identity.Mrsigner.Bytes, identity.Attributes.Bytes
	}
	if !bytes.Equal(q.Body.MrSignerSeam[:], mrsigner) {
		return nil, fmt.Errorf("%w: MRSIGNERSEAM %x, want %x", ErrTDXModuleMismatch, q.Body.MrSignerSeam, mrsigner)
	}
	// Intel's library requires zero SEAM attributes equal to the TCB info's.
	if q.Body.SeamAttributes != [8]byte{} || !bytes.Equal(q.Body.SeamAttributes[:], attributes) {
		return nil, fmt.Errorf("%w: SEAM attributes %x, want %x", ErrTDXModuleMismatch, q.Body.SeamAttributes, attributes)
	}
	return identity, nil
}

func findModuleIdentity(info *pcs.TcbInfo, version byte) *pcs.TdxModuleIdentity {
	id := fmt.Sprintf("TDX_%02X", version)
	for i := range info.TdxModuleIdentities {
		if strings.EqualFold(info.TdxModuleIdentities[i].ID, id) {
			return &info.TdxModuleIdentities[i]
		}
	}
	return nil
}

// tdxModuleLevel picks the module identity's first TCB level the module's
// SVN reaches. A nil identity (module version 0) has no level.
func tdxModuleLevel(identity *pcs.TdxModuleIdentity, teeTCBSVN [16]byte) (*pcs.TcbLevel, error) {
	if identity == nil {
		return nil, nil
	}
	for i := range identity.TcbLevels {
		l := &identity.TcbLevels[i]
		if uint32(teeTCBSVN[0]) < l.Tcb.Isvsvn {
			continue
		}
		switch string(l.TcbStatus) {
		case StatusUpToDate, StatusOutOfDate, statusRevoked:
			return l, nil
		}
		return nil, fmt.Errorf("%w: TDX module status %q", ErrTCBNotSupported, l.TcbStatus)
	}
	return nil, fmt.Errorf("%w: TDX module SVN %d is below every level of %s", ErrTCBNotSupported, teeTCBSVN[0], identity.ID)
}

// checkQEIdentity compares the QE report with Intel's identity of the TD
// quoting enclave and returns the TCB level its ISV SVN reaches.
func checkQEIdentity(r *EnclaveReport, id *pcs.EnclaveIdentity) (*pcs.TcbLevel, error) {
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

// qeStatus folds the QE level's status the way Intel's library does:
// anything but UpToDate and Revoked counts as OutOfDate.
func qeStatus(l *pcs.TcbLevel) string {
	switch s := string(l.TcbStatus); s {
	case StatusUpToDate, statusRevoked:
		return s
	}
	return StatusOutOfDate
}

// matchTCBLevels returns the first level the PCK's SGX TCB reaches and the
// first such level the TD's TEE TCB SVN reaches too. Levels come newest
// first. For a module of major version > 0 the first two TEE TCB SVN bytes
// are the module's, judged by its identity instead.
func matchTCBLevels(levels []pcs.TcbLevel, p *platformInfo, teeTCBSVN [16]byte) (sgx, tdx *pcs.TcbLevel) {
	first := 0
	if teeTCBSVN[1] > 0 {
		first = 2
	}
	for i := range levels {
		l := &levels[i]
		if !sgxReaches(p, l) {
			continue
		}
		if sgx == nil {
			sgx = l
		}
		if tdxReaches(teeTCBSVN, l, first) {
			return sgx, l
		}
	}
	return sgx, nil
}

func sgxReaches(p *platformInfo, l *pcs.TcbLevel) bool {
	for i, c := range l.Tcb.SgxTcbcomponents {
		if p.sgxTCB[i] < c.Svn {
			return false
		}
	}
	return p.pceSVN >= l.Tcb.Pcesvn
}

func tdxReaches(teeTCBSVN [16]byte, l *pcs.TcbLevel, first int) bool {
	for i := first; i < len(teeTCBSVN); i++ {
		if teeTCBSVN[i] < l.Tcb.TdxTcbcomponents[i].Svn {
			return false
		}
	}
	return true
}

// convergeModule folds the TDX module's status into the platform's.
func convergeModule(platform, module string) string {
	switch module {
	case StatusOutOfDate:
		return outOfDate(platform)
	case statusRevoked:
		return statusRevoked
	}
	return platform
}

// convergeQE folds the quoting enclave's status into the TD's.
func convergeQE(td, qe string) string {
	switch qe {
	case StatusOutOfDate:
		return outOfDate(td)
	case statusRevoked:
		return statusRevoked
	}
	return td
}

// outOfDate downgrades a status when a component is out of date.
func outOfDate(s string) string {
	switch s {
	case StatusUpToDate, StatusSWHardeningNeeded:
		return StatusOutOfDate
	case StatusConfigurationNeeded, StatusConfigurationAndSWHardeningNeeded:
		return StatusOutOfDateConfigurationNeeded
	}
	return s
}

// relaunchStatus implements the TD 1.5 check: a TD that is out of date only
// because of its TDX module, while the platform now runs an up-to-date
// module (TEE_TCB_SVN2), is advised to relaunch rather than being out of
// date.
func relaunchStatus(svn2 [16]byte, info *pcs.TcbInfo, sgxStatus, tdxStatus string, module *pcs.TcbLevel, qe string) string {
	if qe != StatusUpToDate || module == nil || string(module.TcbStatus) != StatusOutOfDate {
		return tdxStatus
	}
	if !slices.Contains([]string{StatusUpToDate, StatusSWHardeningNeeded, StatusConfigurationNeeded,
		StatusConfigurationAndSWHardeningNeeded}, sgxStatus) {
		return tdxStatus
	}
	if tdxStatus != StatusOutOfDate && tdxStatus != StatusOutOfDateConfigurationNeeded {
		return tdxStatus
	}
	latest := &info.TcbLevels[0]
	moduleSVN := uint32(latest.Tcb.TdxTcbcomponents[0].Svn)
	if svn2[1] > 0 {
		identity := findModuleIdentity(info, svn2[1])
		if identity == nil || len(identity.TcbLevels) == 0 {
			return tdxStatus
		}
		moduleSVN = identity.TcbLevels[0].Tcb.Isvsvn
	}
	if uint32(svn2[0]) < moduleSVN || svn2[2] < latest.Tcb.TdxTcbcomponents[2].Svn {
		return tdxStatus
	}
	if configurationNeeded(sgxStatus) || configurationNeeded(tdxStatus) {
		return StatusTDRelaunchAdvisedConfigNeeded
	}
	return StatusTDRelaunchAdvised
}

func configurationNeeded(s string) bool {
	switch s {
	case StatusConfigurationNeeded, StatusOutOfDateConfigurationNeeded,
		StatusConfigurationAndSWHardeningNeeded, StatusTDRelaunchAdvisedConfigNeeded:
		return true
	}
	return false
}

func earliestDate(tdx, qe *pcs.TcbLevel) time.Time {
	// Both dates were checked to be RFC 3339 when the collateral was parsed.
	a, _ := time.Parse(time.RFC3339, tdx.TcbDate)
	b, _ := time.Parse(time.RFC3339, qe.TcbDate)
	if b.Before(a) {
		return b
	}
	return a
}

func advisories(levels ...*pcs.TcbLevel) []string {
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
