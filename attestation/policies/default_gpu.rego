# Cocoon's default attestation policy for GPUs (device class "gpu"): the
# claims of NVIDIA's local verifier, which refuses a report that is not
# signed by a key chained to NVIDIA's device root or that answers another
# nonce. Trustee's default GPU policy reads NRAS's claims instead; the
# reference value names for firmware versions are Trustee's.
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

# 2: a genuine Hopper GPU (its attestation key chains to NVIDIA's root).
hardware := 2 if {
	input.nvidia.arch == "Hopper"
}

# 2: firmware (VBIOS) and driver at versions the owner approved.
configuration := 2 if {
	input.nvidia.config.vbios_version in query_reference_value("allowed_vbios_versions")
	input.nvidia.config.driver_version in query_reference_value("allowed_driver_versions")
}

# 3: every measurement a golden set names has one of its values. Each
# golden set is an object {"<index>": ["<hex>", ...]} in the reference
# value "nvidia_gpu_measurements" (as NVIDIA's RIMs list them).
executables := 3 if {
	some golden in query_reference_value("nvidia_gpu_measurements")
	count(golden) > 0
	every index, allowed in golden {
		input.nvidia.measurements[index] in allowed
	}
}
