# The rules of the agent policies cocoon-policy generates (package
# agent/policy/generate). The generator appends one pod's policy_data: its
# containers as the pod's YAML and images define them. A CreateContainerRequest
# is allowed only when every field the host could change to run something
# else, or run it differently, is the policy's; a refusal names each field
# that differs (the message reaches kubectl describe pod). Each check is
# stated positively: a field the input lacks fails its check.
package agent_policy

import future.keywords.contains
import future.keywords.every
import future.keywords.if
import future.keywords.in

# The pod's expectations, in this package's layout (data.go). A policy in
# Kata's layout (--format kata) defines pod from genpolicy's policy_data.
pod := policy_data

default CreateSandboxRequest := true

default DestroySandboxRequest := true

default GuestDetailsRequest := true

default RemoveContainerRequest := true

default WaitProcessRequest := true

default SignalProcessRequest := true

default StatsContainerRequest := true

default PauseContainerRequest := true

default ResumeContainerRequest := true


default TtyWinResizeRequest := true

default UpdateContainerRequest := true

default ListInterfacesRequest := true

default ListRoutesRequest := true

default OnlineCPUMemRequest := true

default GetOOMEventRequest := true

# Images are pulled as a container's storage, by the digest the policy names.
default PullImageRequest := false

default SetPolicyRequest := false

# Only a container this policy let the host create may start.
default StartContainerRequest := false

StartContainerRequest if data.pstate[concat("", ["container:", input.container_id])]

# The containers' output (kubectl logs) only when the pod's author allowed it.
default ReadStreamRequest := false

ReadStreamRequest if pod.allow_logs == true

# A container's termination message is output too: it leaves the guest
# under the same choice.
default TerminationMessageRequest := false

TerminationMessageRequest if pod.allow_logs == true

# A process's standard input: kubectl exec's, or a container's that has one
# (kubectl attach).
default WriteStreamRequest := false

WriteStreamRequest if stdin_allowed

default CloseStdinRequest := false

CloseStdinRequest if stdin_allowed

stdin_allowed if pod.allow_exec == true

stdin_allowed if {
	created := data.pstate[concat("", ["exec:", input.container_id])]
	pod.containers[created.name].stdin == true
	input.exec_id == input.container_id
}

# The pod's network as the runtime describes it, never on loopback.
default UpdateInterfaceRequest := false

UpdateInterfaceRequest if {
	i := input.interface
	i.name != "lo"
	i.hwAddr != "00:00:00:00:00:00"
	# At most UP, BROADCAST, RUNNING, NOARP, MULTICAST, LOWER_UP and DORMANT:
	# never LOOPBACK, POINTOPOINT or PROMISC.
	bits.and(i.raw_flags, bits.negate(200899)) == 0
}

default UpdateRoutesRequest := false

UpdateRoutesRequest if {
	every r in input.routes.Routes {
		r.device != "lo"
		not loopback(r.source)
	}
}

default AddARPNeighborsRequest := false

AddARPNeighborsRequest if {
	every n in input.neighbors.ARPNeighbors {
		n.device != "lo"
		n.toIPAddress.mask == ""
		not loopback(n.toIPAddress.address)
	}
}

loopback(a) if regex.match(`^(127\.[0-9.]+|(0{0,4}:){1,7}0{0,3}1|0\.0\.0\.0)$`, a)

# Files the shim copies in (volumes, /etc/hosts, ...) go under the shared
# directory, named after a container; symlinks stay inside their volume.
default CopyFileRequest := false

CopyFileRequest if {
	regex.match(`^/run/kata-containers/shared/containers/[0-9a-f]{64}-[0-9a-f]{16}-[^/]+(/[^/]+)*$`, input.path)
	not dot_segment(input.path)
	copied_link_ok(input)
}

dot_segment(p) if regex.match(`(^|/)\.\.?(/|$)`, p)

copied_link_ok(i) if i.file_type != "Symlink"

copied_link_ok(i) if {
	i.file_type == "Symlink"
	not startswith(i.symlink_target, "/")
	not dot_segment(i.symlink_target)
}

# Commands in a container: its probes' and hooks' exact argument vectors,
# any command when the pod's author allowed kubectl exec; always as the
# container's process runs (user, environment, directory, capabilities).
default ExecProcessRequest := false

ExecProcessRequest if {
	is_null(input.string_user)
	input.process.SelinuxLabel == ""
	input.process.ApparmorProfile == ""
	created := data.pstate[concat("", ["exec:", input.container_id])]
	as_run(input.process) == created.process
	exec_allowed(created.name, input.process.Args)
}

exec_allowed(_, _) if pod.allow_exec == true

exec_allowed(name, args) if {
	some command in pod.containers[name].exec_commands
	command == args
}

# How a process runs besides its arguments; containerd adds TERM with a
# terminal.
as_run(p) := {
	"User": p.User, "Cwd": p.Cwd, "Capabilities": p.Capabilities, "NoNewPrivileges": p.NoNewPrivileges,
	"Env": sort([e | some e in p.Env; not startswith(e, "TERM=")]),
}

# A refusal's message is its reasons joined by "; "; every value in a
# reason is JSON, so a "; " inside one is inside a JSON string.
CreateContainerRequest := {"allowed": create_allowed, "message": create_message, "ops": create_ops}

i_oci := input.OCI

i_anno := object.get(input, ["OCI", "Annotations"], {})

i_name := object.get(i_anno, "io.kubernetes.cri.container-name", "")

p_container := pod.containers[i_name]

default create_allowed := false

create_allowed if {
	p_container
	count(failed) == 0
}

default create_message := ""

create_message := sprintf("container %s is not in the pod's policy", [json.marshal(i_name)]) if not p_container

create_message := concat("; ", [why(c) | some c in sort(failed)]) if p_container

create_ops := [
	{"op": "add", "path": "/pstate/sandbox_name", "value": i_anno["io.kubernetes.cri.sandbox-name"]},
	{"op": "add", "path": concat("", ["/pstate/container:", input.container_id]), "value": i_name},
	{"op": "add", "path": concat("", ["/pstate/exec:", input.container_id]), "value": {"name": i_name, "process": as_run(i_oci.Process)}},
] if create_allowed

default create_ops := []

# Every field checked, by the name a refusal gives it.
checks := {
	"container_id", "sandbox_pidns", "OCI.Annotations", "image", "storages", "OCI.Root",
	"OCI.Process.Args", "OCI.Process.Env", "OCI.Process.Cwd", "OCI.Process.User",
	"OCI.Process.Capabilities", "OCI.Process.NoNewPrivileges", "OCI.Process.Terminal",
	"OCI.Mounts", "OCI.Linux.Namespaces", "OCI.Linux.MaskedPaths", "OCI.Linux.ReadonlyPaths",
	"OCI.Linux.Sysctl", "OCI.Linux.Devices", "runtime-only fields",
}

failed := {c | some c in checks; not passed[c]}

why(c) := sprintf("%s: %s", [c, reason[c]]) if reason[c]

why(c) := sprintf("%s: differs from the pod's policy", [c]) if not reason[c]

shown(path) := json.marshal(object.get(input, path, null))

bundle_id := input.container_id

root_path := concat("", ["/run/kata-containers/", bundle_id, "/rootfs"])

# The container id names its rootfs and copies: containerd's 64 hex digits.
passed contains "container_id" if {
	regex.match(`^[0-9a-f]{64}$`, input.container_id)
	input.exec_id == input.container_id
}

reason["container_id"] := sprintf("%s is not a container id of containerd's", [shown(["container_id"])])

passed contains "sandbox_pidns" if input.sandbox_pidns == p_container.sandbox_pidns

reason["sandbox_pidns"] := sprintf("%s, the policy's %v", [shown(["sandbox_pidns"]), p_container.sandbox_pidns])

# The pod: its namespace, a name of the workload's pods, a container of it;
# of Kata's annotations only those its runtime sets.
kata_annotations := {
	"io.katacontainers.pkg.oci.bundle_path", "io.katacontainers.pkg.oci.container_type",
	"io.katacontainers.config.hypervisor.cc_init_data",
}

passed contains "OCI.Annotations" if {
	i_anno["io.kubernetes.cri.sandbox-namespace"] == pod.namespace
	regex.match(pod.sandbox_name, i_anno["io.kubernetes.cri.sandbox-name"])
	# One pod per sandbox: its first container's.
	object.get(data.pstate, "sandbox_name", i_anno["io.kubernetes.cri.sandbox-name"]) == i_anno["io.kubernetes.cri.sandbox-name"]
	i_anno["io.kubernetes.cri.container-type"] == "container"
	i_anno["io.katacontainers.pkg.oci.container_type"] == "pod_container"
	every k, _ in i_anno {
		annotation_allowed(k)
	}
}

annotation_allowed(k) if not startswith(k, "io.katacontainers.")

annotation_allowed(k) if k in kata_annotations

reason["OCI.Annotations"] := sprintf("pod %s in namespace %s (container type %s, other io.katacontainers annotations %s), the policy's: %s in %s", [
	json.marshal(object.get(i_anno, "io.kubernetes.cri.sandbox-name", "")), json.marshal(object.get(i_anno, "io.kubernetes.cri.sandbox-namespace", "")),
	json.marshal(object.get(i_anno, "io.kubernetes.cri.container-type", "")),
	json.marshal([k | some k, _ in i_anno; startswith(k, "io.katacontainers."); not k in kata_annotations]),
	json.marshal(pod.sandbox_name), json.marshal(pod.namespace),
])

passed contains "image" if i_anno["io.kubernetes.cri.image-name"] == p_container.image

reason["image"] := sprintf("%s is not the policy's %s", [json.marshal(object.get(i_anno, "io.kubernetes.cri.image-name", "")), json.marshal(p_container.image)])

# One storage is the image, pulled in the guest by the policy's digest; the
# others are the pod's volumes in the guest.
passed contains "storages" if {
	count([s | some s in input.storages; s.driver == "image_guest_pull"]) == 1
	every s in input.storages {
		storage_allowed(s)
	}
}

reason["storages"] := sprintf("%s not allowed", [json.marshal([s.mount_point | some s in input.storages; not storage_allowed(s)])])

storage_allowed(s) if {
	s.driver == "image_guest_pull"
	s.source == p_container.image
	s.fstype == "overlay"
	s.mount_point == root_path
	count(s.options) == 0
	is_null(s.fs_group)
	s.shared == false
	count(s.driver_options) == 1
	startswith(s.driver_options[0], "image_guest_pull=")
	pull := json.unmarshal(substring(s.driver_options[0], count("image_guest_pull="), -1))
	pull.metadata["io.kubernetes.cri.image-name"] == p_container.image
}

storage_allowed(s) if {
	some p in p_container.storages
	p.driver != "image_guest_pull"
	s.driver == p.driver
	s.source == p.source
	s.fstype == p.fstype
	s.mount_point == p.mount_point
	every o in s.options {
		regex.match(p.options, o)
	}
	fs_group_allowed(s.fs_group, p.fs_group)
	s.shared == false
	count(s.driver_options) == 0
}

# A VM pod's disk emptyDir: a scratch disk the guest encrypts under a key
# of its own (Kata's block-encrypted storage), found by its PCI path and
# mounted at the base64url of it.
storage_allowed(s) if {
	some p in p_container.storages
	p.driver == "blk"
	s.driver == "blk"
	regex.match(`^[0-9a-f]{2}(/[0-9a-f]{2}){0,7}$`, s.source)
	s.fstype == p.fstype
	s.mount_point == concat("/", [p.mount_point, base64url.encode(s.source)])
	count(s.options) == 0
	fs_group_allowed(s.fs_group, p.fs_group)
	s.shared == true
	sort(s.driver_options) == ["create_filesystem", "encryption_key=ephemeral"]
}

fs_group_allowed(g, _) if is_null(g)

fs_group_allowed(g, want) if {
	not is_null(want)
	g.group_id == want
}

passed contains "OCI.Root" if {
	i_oci.Root.Path == root_path
	i_oci.Root.Readonly == p_container.readonly_root
}

reason["OCI.Root"] := sprintf("%s, the policy's path %s, read-only %v", [shown(["OCI", "Root"]), json.marshal(root_path), p_container.readonly_root])

passed contains "OCI.Process.Args" if i_oci.Process.Args == p_container.args

reason["OCI.Process.Args"] := sprintf("%s is not the policy's %s", [shown(["OCI", "Process", "Args"]), json.marshal(p_container.args)])

passed contains "OCI.Process.Cwd" if i_oci.Process.Cwd == p_container.cwd

reason["OCI.Process.Cwd"] := sprintf("%s is not the policy's %s", [shown(["OCI", "Process", "Cwd"]), json.marshal(p_container.cwd)])

passed contains "OCI.Process.NoNewPrivileges" if i_oci.Process.NoNewPrivileges == p_container.no_new_privileges

reason["OCI.Process.NoNewPrivileges"] := sprintf("%s, the policy's %v", [shown(["OCI", "Process", "NoNewPrivileges"]), p_container.no_new_privileges])

passed contains "OCI.Process.Terminal" if i_oci.Process.Terminal == p_container.terminal

reason["OCI.Process.Terminal"] := sprintf("%s, the policy's %v", [shown(["OCI", "Process", "Terminal"]), p_container.terminal])

passed contains "OCI.Process.User" if {
	u := i_oci.Process.User
	u.UID == p_container.user.uid
	u.GID == p_container.user.gid
	sort({g | some g in u.AdditionalGids}) == p_container.user.additional_gids
	u.Username == ""
}

reason["OCI.Process.User"] := sprintf("%s, the policy's %s", [shown(["OCI", "Process", "User"]), json.marshal(p_container.user)])

# The environment: each variable once, each of the policy's there (unless
# optional) with its value, and no other but the kubelet's Service
# variables. Refusals name variables, never values (they may be secrets).
env_name(e) := substring(e, 0, indexof(e, "="))

env_value(e) := substring(e, indexof(e, "=") + 1, -1)

p_env := {v.name: v | some v in p_container.env}

env_allowed(e) if {
	contains(e, "=")
	env_value_allowed(p_env[env_name(e)], env_value(e))
}

env_allowed(e) if {
	contains(e, "=")
	not p_env[env_name(e)]
	some r in pod.service_env
	regex.match(r, e)
}

env_value_allowed(v, x) if {
	object.get(v, "sandbox_name", false) == true
	x == i_anno["io.kubernetes.cri.sandbox-name"]
}

env_value_allowed(v, x) if {
	object.get(v, "regex", "") != ""
	regex.match(v.regex, x)
}

env_value_allowed(v, x) if {
	object.get(v, "sha256", "") != ""
	crypto.sha256(x) == v.sha256
}

env_value_allowed(v, x) if {
	object.get(v, "sandbox_name", false) == false
	object.get(v, "regex", "") == ""
	object.get(v, "sha256", "") == ""
	x == object.get(v, "value", "")
}

env_present(v) if object.get(v, "optional", false) == true

env_present(v) if v.name in env_name_set

env_names := [env_name(e) | some e in i_oci.Process.Env]

env_name_set := {n | some n in env_names}

passed contains "OCI.Process.Env" if {
	count(env_names) == count(env_name_set)
	every e in i_oci.Process.Env {
		env_allowed(e)
	}
	every v in p_container.env {
		env_present(v)
	}
}

reason["OCI.Process.Env"] := concat(", ", array.concat(array.concat(
	[sprintf("%s is not the policy's", [n]) | some e in i_oci.Process.Env; not env_allowed(e); n := json.marshal(env_name(e))],
	[sprintf("%s is missing", [json.marshal(v.name)]) | some v in p_container.env; not env_present(v)],
), [sprintf("%s is set twice", [json.marshal(n)]) | some n in {n | some n in env_names; count([m | some m in env_names; m == n]) > 1}]))

# Capabilities: the policy's bounding set (a privileged container's is the
# host kernel's, within the policy's), the others within it.
passed contains "OCI.Process.Capabilities" if {
	c := i_oci.Process.Capabilities
	bounding_allowed(c.Bounding)
	every caps in [c.Effective, c.Permitted, c.Inheritable] {
		every x in caps {
			x in c.Bounding
		}
	}
	count(c.Ambient) == 0
	inheritable_allowed(c.Inheritable)
}

bounding_allowed(b) if {
	not p_container.privileged
	sort({x | some x in b}) == p_container.capabilities
}

bounding_allowed(b) if {
	p_container.privileged
	every x in b {
		x in p_container.capabilities
	}
}

inheritable_allowed(i) if p_container.privileged

inheritable_allowed(i) if count(i) == 0

reason["OCI.Process.Capabilities"] := sprintf("%s, the policy's bounding set %s (privileged %v)", [
	shown(["OCI", "Process", "Capabilities"]),
	json.marshal(p_container.capabilities), p_container.privileged,
])

# Mounts: each the policy's (destination, type, source, options), each of
# the policy's there (unless optional), each destination once, and a
# mount never below one that comes after it (which would hide it).
passed contains "OCI.Mounts" if {
	every m in i_oci.Mounts {
		mount_allowed(m)
	}
	every p in p_container.mounts {
		mount_present(p)
	}
	count(mount_dests) == count(mount_dest_set)
	count(hidden_mounts) == 0
}

mount_dests := [m.destination | some m in i_oci.Mounts]

hidden_mounts contains m.destination if {
	some i, m in i_oci.Mounts
	some parent in ancestors(m.destination)
	parent in mount_dest_set
	some j, n in i_oci.Mounts
	n.destination == parent
	i < j
}

# The directories above a path, but the root (never a mount the rules allow).
ancestors(d) := [concat("/", array.slice(parts, 0, k)) |
	parts := split(d, "/")
	some k in numbers.range(2, count(parts) - 1)
]

p_mounts := {p.destination: p | some p in p_container.mounts}

mount_allowed(m) if {
	p := p_mounts[m.destination]
	p.type == m.type_
	regex.match(replace(p.source, "$(bundle-id)", bundle_id), m.source)
	sort(m.options) == p.options
}

mount_present(p) if object.get(p, "optional", false) == true

mount_present(p) if p.destination in mount_dest_set

mount_dest_set := {d | some d in mount_dests}

reason["OCI.Mounts"] := concat(", ", array.concat(array.concat(
	[sprintf("%s (%s from %s, %s) is not the policy's", [json.marshal(m.destination), json.marshal(m.type_), json.marshal(m.source), json.marshal(m.options)]) |
		some m in i_oci.Mounts
		not mount_allowed(m)
	],
	[sprintf("%s is missing", [json.marshal(p.destination)]) | some p in p_container.mounts; not mount_present(p)],
), [sprintf("%s is hidden by a later mount", [json.marshal(d)]) | some d in hidden_mounts]))

# The container shares the sandbox's IPC and UTS namespaces and has a
# mount namespace of its own; the agent decides the others.
passed contains "OCI.Linux.Namespaces" if {
	sort([n.Type | some n in i_oci.Linux.Namespaces]) == ["ipc", "mount", "uts"]
	every n in i_oci.Linux.Namespaces {
		n.Path == ""
	}
}

reason["OCI.Linux.Namespaces"] := sprintf("%s, the policy's ipc, mount and uts without paths", [shown(["OCI", "Linux", "Namespaces"])])

passed contains "OCI.Linux.MaskedPaths" if {
	every p in p_container.masked_paths {
		p in i_oci.Linux.MaskedPaths
	}
}

reason["OCI.Linux.MaskedPaths"] := sprintf("%s are not masked", [json.marshal([p | some p in p_container.masked_paths; not p in i_oci.Linux.MaskedPaths])])

passed contains "OCI.Linux.ReadonlyPaths" if {
	every p in p_container.readonly_paths {
		readonly_or_masked(p)
	}
}

readonly_or_masked(p) if p in i_oci.Linux.ReadonlyPaths

readonly_or_masked(p) if p in i_oci.Linux.MaskedPaths

reason["OCI.Linux.ReadonlyPaths"] := sprintf("%s are not read-only", [json.marshal([p | some p in p_container.readonly_paths; not readonly_or_masked(p)])])

passed contains "OCI.Linux.Sysctl" if i_oci.Linux.Sysctl == p_container.sysctls

reason["OCI.Linux.Sysctl"] := sprintf("%s is not the policy's %s", [shown(["OCI", "Linux", "Sysctl"]), json.marshal(p_container.sysctls)])

# Host devices only for a privileged container (the guest has none of the
# host's: the agent drops them).
passed contains "OCI.Linux.Devices" if {
	devices_allowed(i_oci.Linux.Devices)
	count(i_oci.Linux.Resources.Devices) == 0
}

devices_allowed(d) if count(d) == 0

devices_allowed(_) if p_container.privileged

reason["OCI.Linux.Devices"] := sprintf("%s (cgroup rules %s) for a container the policy does not make privileged", [
	json.marshal([d.Path | some d in object.get(input, ["OCI", "Linux", "Devices"], [])]), shown(["OCI", "Linux", "Resources", "Devices"]),
])

# What Kata's runtime never sends.
passed contains "runtime-only fields" if {
	count(input.shared_mounts) == 0
	count(input.devices) == 0
	is_null(input.string_user)
	is_null(i_oci.Hooks)
	is_null(i_oci.Solaris)
	is_null(i_oci.Windows)
	is_null(i_oci.Linux.IntelRdt)
	is_null(i_oci.Linux.Seccomp)
	is_null(i_oci.Linux.Resources.BlockIO)
	is_null(i_oci.Linux.Resources.Network)
	is_null(i_oci.Linux.Resources.Pids)
	count(i_oci.Linux.UIDMappings) == 0
	count(i_oci.Linux.GIDMappings) == 0
	i_oci.Linux.MountLabel == ""
	i_oci.Linux.RootfsPropagation == ""
	i_oci.Process.SelinuxLabel == ""
}

reason["runtime-only fields"] := "shared_mounts, devices, string_user, OCI.Hooks, OCI.Solaris, OCI.Windows, OCI.Linux IntelRdt, Seccomp, UID/GID mappings, mount label, rootfs propagation, block I/O, network or pids limits, or a SELinux label are set"
