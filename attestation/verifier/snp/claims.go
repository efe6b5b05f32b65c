package snp

import (
	"encoding/hex"

	"github.com/google/go-sev-guest/abi"

	"github.com/cocoon-cc/cocoon/attestation/verifier"
)

// Claims returns what Trustee's SNP verifier reports for r, with the same
// names, JSON types and hex encodings, so that Trustee's default CPU policy
// (input.snp.*) evaluates unchanged. "report_data" and "init_data" (the
// HOST_DATA) are the keys the attestation service lifts to the top.
func Claims(r *Report) verifier.Claims {
	p := r.proto
	// ParseReport validated the policy already.
	policy, _ := abi.ParseSnpPolicy(p.Policy)
	tcb := r.ReportedTCB()
	return verifier.Claims{
		"policy_abi_major":     int(policy.ABIMajor),
		"policy_abi_minor":     int(policy.ABIMinor),
		"policy_smt_allowed":   policy.SMT,
		"policy_migrate_ma":    policy.MigrateMA,
		"policy_debug_allowed": policy.Debug,
		"policy_single_socket": policy.SingleSocket,

		"reported_tcb_bootloader": int(tcb.Bootloader),
		"reported_tcb_tee":        int(tcb.TEE),
		"reported_tcb_snp":        int(tcb.SNP),
		"reported_tcb_microcode":  int(tcb.Microcode),

		// Bits 0 and 1 of PLATFORM_INFO; newer bits do not matter here.
		"platform_smt_enabled":  p.PlatformInfo&1 != 0,
		"platform_tsme_enabled": p.PlatformInfo&2 != 0,

		"measurement": hex.EncodeToString(p.Measurement),
		"report_data": hex.EncodeToString(p.ReportData),
		"init_data":   hex.EncodeToString(p.HostData),
		"chip_id":     hex.EncodeToString(p.ChipId),
	}
}
