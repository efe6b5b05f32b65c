# A policy written the way Kata's genpolicy writes them (not genpolicy's
# rules.rego): Rego v0 with future keywords, rules answering
# {"allowed", "ops"}, policy state under data.pstate, and the pod's
# expectations in policy_data, which the test appends as genpolicy does.
# It reads the keys genpolicy's rules read, in the shape Kata's agent gives
# them: a key the input lacks leaves a rule undefined, which denies.
package agent_policy

import future.keywords.every
import future.keywords.if
import future.keywords.in

default AllowRequestsFailingPolicy := false

default CreateContainerRequest := {"allowed": false}

default CreateSandboxRequest := true
default DestroySandboxRequest := true
default GuestDetailsRequest := true
default RemoveContainerRequest := true
default WaitProcessRequest := true
default SignalProcessRequest := true
default StatsContainerRequest := true
default ReadStreamRequest := true
default WriteStreamRequest := true
default CloseStdinRequest := true
default TtyWinResizeRequest := true
default ExecProcessRequest := false
default SetPolicyRequest := false
default PullImageRequest := false
# The pod network the runtime describes (genpolicy's defaults).
default UpdateInterfaceRequest := true
default UpdateRoutesRequest := true
default AddARPNeighborsRequest := true

# Files the runtime copies in (volumes, /etc/hosts, ...) only under the
# shared directory, as policy_data's patterns say.
default CopyFileRequest := false
CopyFileRequest if {
	some pattern in policy_data.request_defaults.CopyFileRequest
	regex.match(replace(pattern, "$(sfprefix)", policy_data.common.sfprefix), input.path)
	not regex.match(`(^|/)\.\.?(/|$)`, input.path)
}

# Only a container this policy let the host create may start.
default StartContainerRequest := false
StartContainerRequest if {
	data.pstate[input.container_id] >= 0
}

CreateContainerRequest := {"ops": ops, "allowed": true} if {
	create_input_allowed

	i_oci := input.OCI
	some idx, p_container in policy_data.containers

	input.sandbox_pidns == p_container.sandbox_pidns
	i_oci.Annotations["io.kubernetes.cri.container-type"] == "container"
	i_oci.Annotations["io.katacontainers.pkg.oci.container_type"] == "pod_container"
	i_oci.Annotations["io.kubernetes.cri.sandbox-name"] == policy_data.sandbox_name
	i_oci.Annotations["io.kubernetes.cri.sandbox-namespace"] == policy_data.namespace
	i_oci.Annotations["io.kubernetes.cri.container-name"] == p_container.name
	i_oci.Annotations["io.kubernetes.cri.image-name"] == p_container.image
	i_oci.Process.Args == p_container.args
	i_oci.Root.Readonly == p_container.readonly

	# The bundle id is the container id, and names the rootfs.
	root_regex := replace(policy_data.common.root_path, "$(bundle-id)", "([a-z0-9][a-z0-9.-]*)")
	bundle_id := regex.find_all_string_submatch_n(concat("", ["^", root_regex, "$"]), i_oci.Root.Path, 1)[0][1]
	bundle_id == input.container_id

	allow_storages(p_container, bundle_id)

	ops := [{"op": "add", "path": concat("/", ["/pstate", input.container_id]), "value": idx}]
}

# What Kata's runtime never sends.
create_input_allowed if {
	count(input.shared_mounts) == 0
	is_null(input.string_user)
	count(input.devices) == 0

	i_oci := input.OCI
	is_null(i_oci.Hooks)
	is_null(i_oci.Solaris)
	is_null(i_oci.Windows)

	i_linux := i_oci.Linux
	is_null(i_linux.IntelRdt)
	is_null(i_linux.Seccomp)
	is_null(i_linux.Resources.BlockIO)
	is_null(i_linux.Resources.Network)
	is_null(i_linux.Resources.Pids)
	count(i_linux.Resources.Devices) == 0
	count(i_linux.UIDMappings) == 0
	count(i_linux.GIDMappings) == 0
}

# One storage is the image pulled in the guest as the container's rootfs;
# the others are the pod's emptyDir volumes and /dev/shm, in the guest.
allow_storages(p_container, bundle_id) if {
	count([s | some s in input.storages; s.driver == "image_guest_pull"]) == 1
	every i_storage in input.storages {
		allow_storage(i_storage, p_container, bundle_id)
	}
}

allow_storage(i_storage, p_container, bundle_id) if {
	allow_image_guest_pull(i_storage, p_container, bundle_id)
}

allow_storage(i_storage, _, _) if {
	i_storage.driver == "ephemeral"
	i_storage.source == "tmpfs"
	i_storage.fstype == "tmpfs"
	regex.match(`^/run/kata-containers/sandbox/ephemeral/[a-zA-Z0-9_-][a-zA-Z0-9._-]*$`, i_storage.mount_point)
}

allow_storage(i_storage, _, _) if {
	i_storage.driver == "local"
	i_storage.fstype == "local"
	regex.match(`^/run/kata-containers/sandbox/storage/[a-zA-Z0-9_-][a-zA-Z0-9._-]*$`, i_storage.mount_point)
}

allow_image_guest_pull(i_storage, p_container, bundle_id) if {
	i_storage.driver == "image_guest_pull"
	i_storage.fstype == "overlay"
	i_storage.fs_group == null
	i_storage.shared == false
	count(i_storage.options) == 0
	i_storage.mount_point == replace(policy_data.common.root_path, "$(bundle-id)", bundle_id)
	i_storage.source == p_container.image

	# The image's metadata are the container's annotations.
	some option in i_storage.driver_options
	startswith(option, "image_guest_pull=")
	pull := json.unmarshal(substring(option, count("image_guest_pull="), -1))
	pull.metadata["io.kubernetes.cri.image-name"] == p_container.image
}
