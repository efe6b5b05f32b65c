# Cocoon's default attestation policy for CPU TEEs.
#
# It produces the AR4SI trust vector of an EAR appraisal. Every claim starts
# at the value meaning "not verified" and is raised only when the evidence's
# claims match the reference values registered in the RVPS, under the names
# Trustee's default policy uses, so reference values carry over unchanged.
package policy

import rego.v1

# 33: executables not recognized.
default executables := 33

# 97: hardware not recognized.
default hardware := 97

# 36: security-relevant configuration unavailable.
default configuration := 36

default file_system := 0

default instance_identity := 0

default runtime_opaque := 0

default storage_opaque := 0

default sourced_data := 0

trust_claims := {
	"executables": executables,
	"hardware": hardware,
	"configuration": configuration,
	"file-system": file_system,
	"instance-identity": instance_identity,
	"runtime-opaque": runtime_opaque,
	"storage-opaque": storage_opaque,
	"sourced-data": sourced_data,
}

# --- sample: no security, for tests; Cocoon's resource policy refuses it.

executables := 3 if {
	input.sample.launch_digest in query_reference_value("launch_digest")
}

hardware := 2 if {
	input.sample.svn in query_reference_value("svn")
	input.sample.platform_version.major == query_reference_value("major_version")
	# A missing or expired reference value is null, and Rego orders null
	# below every number: check the type so that it does not pass.
	min_minor := query_reference_value("minimum_minor_version")
	is_number(min_minor)
	input.sample.platform_version.minor >= min_minor
}

configuration := 2 if {
	input.sample.debug == false
}

# --- AMD SEV-SNP

executables := 3 if {
	input.snp.measurement in query_reference_value("snp_launch_measurement")
}

hardware := 2 if {
	input.snp.reported_tcb_bootloader in query_reference_value("snp_bootloader")
	input.snp.reported_tcb_microcode in query_reference_value("snp_microcode")
	input.snp.reported_tcb_snp in query_reference_value("snp_snp_svn")
	input.snp.reported_tcb_tee in query_reference_value("snp_tee_svn")
}

# 2: a known, approved configuration.
configuration := 2 if {
	snp_safe_config
	input.snp.platform_smt_enabled == query_reference_value("snp_smt_enabled")
	input.snp.platform_tsme_enabled == query_reference_value("snp_tsme_enabled")
	input.snp.policy_abi_major == query_reference_value("snp_guest_abi_major")
	input.snp.policy_abi_minor == query_reference_value("snp_guest_abi_minor")
	input.snp.policy_single_socket == query_reference_value("snp_single_socket")
	input.snp.policy_smt_allowed == query_reference_value("snp_smt_allowed")
} else := 3 if {
	# 3: no known vulnerability in what was checked.
	snp_safe_config
}

snp_safe_config if {
	input.snp.policy_debug_allowed == false
	input.snp.policy_migrate_ma == false
}

# --- Intel TDX

executables := 3 if {
	input.tdx.quote.body.rtmr_1 in query_reference_value("rtmr_1")
	input.tdx.quote.body.rtmr_2 in query_reference_value("rtmr_2")
}

hardware := 2 if {
	input.tdx.quote.header.tee_type == "81000000"
	input.tdx.quote.header.vendor_id == "939a7233f79c4ca9940a0db3957f0607"
	input.tdx.quote.body.mr_td in query_reference_value("mr_td")
	input.tdx.tcb_status == "UpToDate"
}

configuration := 2 if {
	input.tdx.td_attributes.debug == false
	input.tdx.quote.body.xfam in query_reference_value("xfam")
}

# --- TPM: the attestation key must be one the owner registered.

hardware := 2 if {
	input.tpm.ak_public in query_reference_value("trusted_aks")
}

executables := 3 if {
	input.tpm.ak_public in query_reference_value("trusted_aks")
	input.tpm.pcr11 in query_reference_value("tpm_pcr11")
}

# A TPM quote says nothing about the platform's configuration: no claim.
configuration := 0 if {
	input.tpm
}

# --- Arm CCA: the verifier refuses a platform not in its trust anchor and
# reference value stores, so a verified token is from a known platform in
# a reference state whose RAK it vouched for (as in Trustee's CCA policy).

hardware := 2 if {
	input.cca.platform
}

instance_identity := 2 if {
	input.cca.platform
}

runtime_opaque := 2 if {
	input.cca.platform
}

executables := 3 if {
	input.cca.realm["cca-realm-initial-measurement"] in query_reference_value("cca.realm.cca-realm-initial-measurement")
}

# 2: the platform is in the PSA "secured" lifecycle state (0x3000-0x30ff),
# the one where its debug interfaces are closed.
configuration := 2 if {
	lifecycle := input.cca.platform["cca-platform-lifecycle"]
	lifecycle >= 12288
	lifecycle < 12544
}

# --- Hygon CSV (Trustee's default policy has no CSV rules; these are
# Cocoon's). The verifier checked the chain to Hygon's root; CSV publishes
# no TCB status to compare.

executables := 3 if {
	input.csv.measure in query_reference_value("csv_measure")
}

hardware := 2 if {
	input.csv
}

configuration := 2 if {
	input.csv.policy.nodbg == 1
}

# --- Intel SGX: the enclave must be one the owner registered.

executables := 3 if {
	input.sgx.body.mr_enclave in query_reference_value("mr_enclave")
	input.sgx.body.mr_signer in query_reference_value("mr_signer")
}

hardware := 2 if {
	input.sgx.header.vendor_id == "939a7233f79c4ca9940a0db3957f0607"
	input.sgx.tcb_status == "UpToDate"
}

# The low nibble of the first attributes byte holds DEBUG (bit 1).
configuration := 2 if {
	substring(input.sgx.body["attributes.flags"], 1, 1) in {"0", "1", "4", "5", "8", "9", "c", "d"}
}

# --- Azure confidential VMs: the hardware report behind the vTPM, and the
# vTPM's PCRs, under Trustee's reference value names.

executables := 3 if {
	input["az-snp-vtpm"].measurement in query_reference_value("measurement")
	input["az-snp-vtpm"].tpm.pcr11 in query_reference_value("snp_pcr11")
}

hardware := 2 if {
	input["az-snp-vtpm"].reported_tcb_bootloader in query_reference_value("tcb_bootloader")
	input["az-snp-vtpm"].reported_tcb_microcode in query_reference_value("tcb_microcode")
	input["az-snp-vtpm"].reported_tcb_snp in query_reference_value("tcb_snp")
	input["az-snp-vtpm"].reported_tcb_tee in query_reference_value("tcb_tee")
}

configuration := 2 if {
	input["az-snp-vtpm"].platform_smt_enabled in query_reference_value("smt_enabled")
	input["az-snp-vtpm"].platform_tsme_enabled in query_reference_value("tsme_enabled")
	input["az-snp-vtpm"].policy_abi_major in query_reference_value("abi_major")
	input["az-snp-vtpm"].policy_abi_minor in query_reference_value("abi_minor")
	input["az-snp-vtpm"].policy_single_socket in query_reference_value("single_socket")
	input["az-snp-vtpm"].policy_smt_allowed in query_reference_value("smt_allowed")
}

executables := 3 if {
	input["az-tdx-vtpm"].tpm.pcr11 in query_reference_value("tdx_pcr11")
}

hardware := 2 if {
	input["az-tdx-vtpm"].quote.header.tee_type == "81000000"
	input["az-tdx-vtpm"].quote.header.vendor_id == "939a7233f79c4ca9940a0db3957f0607"
	input["az-tdx-vtpm"].quote.body.mr_td in query_reference_value("mr_td")
	input["az-tdx-vtpm"].tcb_status == "UpToDate"
}

configuration := 2 if {
	input["az-tdx-vtpm"].quote.body.xfam in query_reference_value("xfam")
}

# --- IBM Secure Execution, as Trustee's default policy: the verifier
# checked the Ultravisor's measurement under a request only verified host
# keys unpack, and that the image is the configured one.

executables := 3 if {
	input.se
}

hardware := 2 if {
	input.se
}

configuration := 2 if {
	input.se
}
