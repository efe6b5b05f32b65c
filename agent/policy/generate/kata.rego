# The pod's expectations read from genpolicy's policy_data layout
# (cocoon-policy generate --format kata): each container's OCI
# expectations, storages, exec commands and sandbox_pidns, the common
# path placeholders, and request_defaults.
kata_common := policy_data.common

# genpolicy's placeholders, expanded (but $(bundle-id), which the rules
# replace by the request's container id).
kata_expand(s) := replace(replace(s, "$(sfprefix)", kata_common.sfprefix), "$(root_path)", kata_common.root_path)

kata_pod_containers := [c | some c in policy_data.containers; c.OCI.Annotations["io.kubernetes.cri.container-type"] == "container"]

pod := {
	"namespace": kata_pod_containers[0].OCI.Annotations["io.kubernetes.cri.sandbox-namespace"],
	"sandbox_name": policy_data.sandbox_name,
	"service_env": policy_data.request_defaults.CreateContainerRequest.allow_env_regex,
	"allow_exec": count(policy_data.request_defaults.ExecProcessRequest.regex) > 0,
	"allow_logs": policy_data.request_defaults.ReadStreamRequest,
	"containers": {name: kata_container(c) |
		some c in kata_pod_containers
		name := c.OCI.Annotations["io.kubernetes.cri.container-name"]
	},
}

kata_container(c) := {
	"image": c.OCI.Annotations["io.kubernetes.cri.image-name"],
	"args": c.OCI.Process.Args,
	"env": array.concat(array.concat(
		[kata_env(c, substring(e, 0, indexof(e, "=")), substring(e, indexof(e, "=") + 1, -1)) | some e in c.OCI.Process.Env],
		[{"name": n, "regex": r, "optional": n in c.env_optional} | some n, r in c.env_regex],
	), [{"name": n, "sha256": h, "optional": n in c.env_optional} | some n, h in c.env_sha256]),
	"cwd": c.OCI.Process.Cwd,
	"user": {"uid": c.OCI.Process.User.UID, "gid": c.OCI.Process.User.GID, "additional_gids": c.OCI.Process.User.AdditionalGids},
	"capabilities": c.OCI.Process.Capabilities.Bounding,
	"privileged": c.privileged,
	"no_new_privileges": c.OCI.Process.NoNewPrivileges,
	"readonly_root": c.OCI.Root.Readonly,
	"terminal": c.OCI.Process.Terminal,
	"stdin": c.stdin,
	"sandbox_pidns": c.sandbox_pidns,
	"sysctls": c.OCI.Linux.Sysctl,
	"masked_paths": c.OCI.Linux.MaskedPaths,
	"readonly_paths": c.OCI.Linux.ReadonlyPaths,
	"mounts": [{"destination": m.destination, "type": m.type_, "source": kata_expand(m.source), "options": m.options, "optional": m.destination in c.optional_mounts} |
		some m in c.OCI.Mounts
	],
	"storages": [object.union(s, {"mount_point": kata_expand(s.mount_point)}) | some s in c.storages],
	"exec_commands": c.exec_commands,
}

kata_env(c, name, value) := {"name": name, "sandbox_name": true, "optional": name in c.env_optional} if value == "$(sandbox-name)"

kata_env(c, name, value) := {"name": name, "value": value, "optional": name in c.env_optional} if value != "$(sandbox-name)"
