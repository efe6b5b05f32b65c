package dcap

// TEE says which enclave a quote comes from. SGX and TDX quotes share the
// PCK chain, CRLs and the shape of their collateral; they differ in which
// TCB info and quoting enclave identity apply.
type TEE int

const (
	TDX TEE = iota
	SGX
)

// teeInfo is what tells a TEE's collateral apart: its name in PCS paths,
// the ids Intel's collateral carries, and the prefix of its files in a
// collateral directory (TDX's keep the names they had before SGX shared
// the directory).
type teeInfo struct {
	name, tcbInfoID, qeIdentityID, filePrefix string
}

var tees = [...]teeInfo{
	TDX: {"tdx", "TDX", "TD_QE", ""},
	SGX: {"sgx", "SGX", "QE", "sgx-"},
}

func (t TEE) String() string       { return tees[t].name }
func (t TEE) tcbInfoID() string    { return tees[t].tcbInfoID }
func (t TEE) qeIdentityID() string { return tees[t].qeIdentityID }
func (t TEE) filePrefix() string   { return tees[t].filePrefix }
