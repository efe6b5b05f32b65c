# Cocoon's default agent policy. The host may create, run, signal, resize and
# tear down the pod's containers, set up the pod's network (which it controls
# anyway) and copy in the pod's volume files (the agent keeps them under its
# shared directory); a container's bind mounts must name those copies or the
# pod's emptyDir storages, never a host path (hostPath volumes) nor a host
# device. It may not run other commands in them
# (ExecProcess), read what they print (ReadStream: their output may carry
# secrets) or their termination messages (TerminationMessage, Cocoon's: the
# file a container writes at its terminationMessagePath) or replace this
# policy. A pod that wants any of those ships its
# own policy in initdata (policy.rego). Rules the policy does not define
# are denied.
package agent_policy

default CreateSandboxRequest := true

default DestroySandboxRequest := true

default GuestDetailsRequest := true

default PullImageRequest := true

CreateContainerRequest := {"allowed": count(refused) == 0, "message": concat("; ", sort(refused)), "ops": remembered}

# How the container's process runs, remembered in the policy state for its
# exec processes (ExecProcessRequest).
default remembered := []

remembered := [{"op": "add", "path": concat("", ["/pstate/exec:", input.container_id]), "value": as_run(input.OCI.Process)}]

# What decides how a command runs, besides its arguments: containerd runs
# an exec with the container's process settings, adding TERM with a
# terminal.
as_run(p) := {
	"User": p.User, "Cwd": p.Cwd, "Capabilities": p.Capabilities, "NoNewPrivileges": p.NoNewPrivileges,
	"Env": sort([e | some e in p.Env; not startswith(e, "TERM=")]),
}

# Guest paths a bind mount may name: files copied in (CopyFile) and the
# pod's emptyDir storages.
guest_sources := [
	"/run/kata-containers/shared/containers/",
	"/run/kata-containers/sandbox/ephemeral/",
	"/run/kata-containers/sandbox/storage/",
]

# The host paths (hostPath volumes) a pod allows: none. A pod's own policy
# (initdata policy.rego, a copy of this one) may list some; each container
# mounting one then gets an empty guest directory of that name, shared by
# the pod's containers: the guest cannot see the host's files.
allowed_host_paths := set()

# Host devices a pod allows (their paths): none.
allowed_devices := set()

bind_mount(m) if m.type_ == "bind"

bind_mount(m) if "bind" in m.options

bind_mount(m) if "rbind" in m.options

refused contains msg if {
	some m in input.OCI.Mounts
	bind_mount(m)
	not guest_source(m.source)
	not m.source in allowed_host_paths
	msg := sprintf("mount %s: host path %s is not shared with the sandbox (hostPath volumes need the pod's policy to allow them)", [m.destination, m.source])
}

# Raw block volumes (volumeDevices) the guest opens encrypted, by their
# path in the container: none. A pod's own policy lists them, e.g.
#   encrypted_volumes := {"/dev/xvda": {"key": "kbs:///default/pv/key",
#     "mount_point": "/data", "format": true}}
# The agent opens the device with LUKS2 under the KBS resource "key"
# (released after attestation) and mounts its ext4 at "mount_point" in the
# container; "format" lets it format a blank device (no LUKS2 header, first
# MiB zero) on first use, never one holding anything else.
encrypted_volumes := {}

refused contains msg if {
	some d in input.OCI.Linux.Devices
	not d.Path in allowed_devices
	not encrypted_volumes[d.Path]
	msg := sprintf("device %s: host devices need the pod's policy to allow them", [d.Path])
}

guest_source(s) if {
	some p in guest_sources
	startswith(s, p)
	not contains(s, "/..")
}

default StartContainerRequest := true

default RemoveContainerRequest := true

default WaitProcessRequest := true

default SignalProcessRequest := true

default StatsContainerRequest := true

default PauseContainerRequest := true

default ResumeContainerRequest := true

default WriteStreamRequest := true

default CloseStdinRequest := true

default TtyWinResizeRequest := true

default UpdateContainerRequest := true

default UpdateInterfaceRequest := true

default UpdateRoutesRequest := true

default ListInterfacesRequest := true

default ListRoutesRequest := true

default AddARPNeighborsRequest := true

default OnlineCPUMemRequest := true

default CopyFileRequest := true

default GetOOMEventRequest := true

default ExecProcessRequest := false

# Commands the host may run in the pod's containers (kubectl exec, exec
# probes), each an exact argument vector, in genpolicy's
# policy_data.request_defaults.ExecProcessRequest.allowed_commands: none
# here. A pod whose probes run commands lists them in its own copy of this
# policy (README, "The agent policy"). They run as the container's process
# does (user, environment, working directory, capabilities): a host that
# could set LD_PRELOAD or PATH would choose what runs.
ExecProcessRequest if {
	some command in policy_data.request_defaults.ExecProcessRequest.allowed_commands
	command == input.process.Args
	as_run(input.process) == data.pstate[concat("", ["exec:", input.container_id])]
}
default ReadStreamRequest := false

default TerminationMessageRequest := false

default SetPolicyRequest := false

# The data the rules read (last, as genpolicy writes it).
policy_data := {"request_defaults": {"ExecProcessRequest": {"allowed_commands": []}}}
