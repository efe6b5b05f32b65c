package tdx

import (
	"bytes"
	"fmt"
	"slices"
	"strings"

	"github.com/google/go-tdx-guest/pcs"

	"github.com/cocoon-cc/cocoon/attestation/verifier/dcap"
)

// evaluateTCB follows the TDX path of Intel's quote verification library:
// TDX module identity, QE identity, TCB level matching, then converging the
// platform, module and QE statuses into one.
func evaluateTCB(q *Quote, r *dcap.Result) (*dcap.TCBResult, error) {
	info, p, qe := &r.Collateral.TCBInfo, &r.Chain.Platform, r.QELevel
	module, err := checkTDXModule(q, info)
	if err != nil {
		return nil, err
	}
	sgxLevel, tdxLevel := matchTCBLevels(info.TcbLevels, p, q.Body.TeeTCBSVN)
	if sgxLevel == nil || tdxLevel == nil {
		return nil, fmt.Errorf("%w: PCK TCB %x pcesvn %d, TEE TCB SVN %x", dcap.ErrTCBNotSupported,
			p.SGXTCB, p.PCESVN, q.Body.TeeTCBSVN)
	}
	moduleLevel, err := tdxModuleLevel(module, q.Body.TeeTCBSVN)
	if err != nil {
		return nil, err
	}
	status := string(tdxLevel.TcbStatus)
	if moduleLevel != nil {
		status = convergeModule(status, string(moduleLevel.TcbStatus))
	}
	if status != dcap.StatusRevoked && q.BodyType == bodyTypeTD15 {
		status = relaunchStatus(q.Body.TeeTCBSVN2, info, string(sgxLevel.TcbStatus), status, moduleLevel, dcap.QEStatus(qe))
	}
	status = dcap.ConvergeQE(status, dcap.QEStatus(qe))
	if status == dcap.StatusRevoked {
		return nil, fmt.Errorf("%w: TCB level %s", dcap.ErrTCBRevoked, tdxLevel.TcbDate)
	}
	return &dcap.TCBResult{
		Status:     status,
		Date:       dcap.EarliestDate(tdxLevel, qe),
		Advisories: dcap.Advisories(tdxLevel, moduleLevel, qe),
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
		case dcap.StatusUpToDate, dcap.StatusOutOfDate, dcap.StatusRevoked:
			return l, nil
		}
		return nil, fmt.Errorf("%w: TDX module status %q", dcap.ErrTCBNotSupported, l.TcbStatus)
	}
	return nil, fmt.Errorf("%w: TDX module SVN %d is below every level of %s", dcap.ErrTCBNotSupported, teeTCBSVN[0], identity.ID)
}

// matchTCBLevels returns the first level the PCK's SGX TCB reaches and the
// first such level the TD's TEE TCB SVN reaches too. Levels come newest
// first. For a module of major version > 0 the first two TEE TCB SVN bytes
// are the module's, judged by its identity instead.
func matchTCBLevels(levels []pcs.TcbLevel, p *dcap.PlatformInfo, teeTCBSVN [16]byte) (sgx, tdx *pcs.TcbLevel) {
	first := 0
	if teeTCBSVN[1] > 0 {
		first = 2
	}
	for i := range levels {
		l := &levels[i]
		if !dcap.SGXReaches(p, l) {
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
	case dcap.StatusOutOfDate:
		return dcap.OutOfDate(platform)
	case dcap.StatusRevoked:
		return dcap.StatusRevoked
	}
	return platform
}

// relaunchStatus implements the TD 1.5 check: a TD that is out of date only
// because of its TDX module, while the platform now runs an up-to-date
// module (TEE_TCB_SVN2), is advised to relaunch rather than being out of
// date.
func relaunchStatus(svn2 [16]byte, info *pcs.TcbInfo, sgxStatus, tdxStatus string, module *pcs.TcbLevel, qe string) string {
	if qe != dcap.StatusUpToDate || module == nil || string(module.TcbStatus) != dcap.StatusOutOfDate {
		return tdxStatus
	}
	if !slices.Contains([]string{dcap.StatusUpToDate, dcap.StatusSWHardeningNeeded, dcap.StatusConfigurationNeeded,
		dcap.StatusConfigurationAndSWHardeningNeeded}, sgxStatus) {
		return tdxStatus
	}
	if tdxStatus != dcap.StatusOutOfDate && tdxStatus != dcap.StatusOutOfDateConfigurationNeeded {
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
		return dcap.StatusTDRelaunchAdvisedConfigNeeded
	}
	return dcap.StatusTDRelaunchAdvised
}

func configurationNeeded(s string) bool {
	switch s {
	case dcap.StatusConfigurationNeeded, dcap.StatusOutOfDateConfigurationNeeded,
		dcap.StatusConfigurationAndSWHardeningNeeded, dcap.StatusTDRelaunchAdvisedConfigNeeded:
		return true
	}
	return false
}
