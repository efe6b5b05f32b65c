package generate

// The policy data of Cocoon's generated policies (policy_data, read by
// rules.rego): what each container of the pod may be created with. Values
// the host legitimately chooses (a pod's generated name, its IP, a copy's
// file name) are regular expressions; everything else is exact.

// layoutVersion is the version of this layout, for rules and tools that
// read policy_data.
const layoutVersion = 1

// PolicyData is one pod's expectations.
type PolicyData struct {
	Version   int    `json:"version"`
	Workload  string `json:"workload"` // kind/name, for people reading the policy
	Namespace string `json:"namespace"`
	// SandboxName is a regular expression of the pod's name.
	SandboxName string                `json:"sandbox_name"`
	Containers  map[string]*Container `json:"containers"` // by name
	// ServiceEnv are regular expressions of the variables the kubelet adds
	// for Services (KUBERNETES_SERVICE_HOST, ...).
	ServiceEnv []string `json:"service_env"`
	// AllowExec lets the host run any command in the containers (kubectl
	// exec) as their process runs; without it, only ExecCommands run.
	AllowExec bool `json:"allow_exec"`
	// AllowLogs lets the host read the containers' output (kubectl logs).
	AllowLogs bool `json:"allow_logs"`
}

// Container is what a container may be created with.
type Container struct {
	Image           string            `json:"image"` // by digest
	Args            []string          `json:"args"`
	Env             []EnvVar          `json:"env"`
	Cwd             string            `json:"cwd"`
	User            User              `json:"user"`
	Capabilities    []string          `json:"capabilities"` // the bounding set, sorted; privileged: the most allowed
	Privileged      bool              `json:"privileged"`
	NoNewPrivileges bool              `json:"no_new_privileges"`
	ReadonlyRoot    bool              `json:"readonly_root"`
	Terminal        bool              `json:"terminal"`
	Stdin           bool              `json:"stdin"` // kubectl attach may write to it
	SandboxPidns    bool              `json:"sandbox_pidns"`
	Sysctls         map[string]string `json:"sysctls"`
	MaskedPaths     []string          `json:"masked_paths"`   // at least these
	ReadonlyPaths   []string          `json:"readonly_paths"` // at least these (or masked)
	Mounts          []Mount           `json:"mounts"`
	Storages        []Storage         `json:"storages"`
	// ExecCommands are the argument vectors the host may run in the
	// container (exec probes, lifecycle hooks).
	ExecCommands [][]string `json:"exec_commands"`
}

// EnvVar is one environment variable: its value, or a regular expression
// of it, or the SHA-256 of a Secret's value (the policy travels in the
// pod's annotation and attestation claims: it must not carry secrets).
type EnvVar struct {
	Name   string `json:"name"`
	Value  string `json:"value,omitempty"`
	Regex  string `json:"regex,omitempty"`
	SHA256 string `json:"sha256,omitempty"`
	// SandboxName: the value is the pod's name (downward API
	// metadata.name, HOSTNAME).
	SandboxName bool `json:"sandbox_name,omitempty"`
	// Optional: the variable may be missing (an optional reference to a
	// ConfigMap or Secret the manifests do not hold).
	Optional bool `json:"optional,omitempty"`
}

// User is the container's process identity.
type User struct {
	UID            int64   `json:"uid"`
	GID            int64   `json:"gid"`
	AdditionalGids []int64 `json:"additional_gids"` // sorted, unique
}

// Mount is one mount the container may have. Source is a regular
// expression in which $(bundle-id) stands for the container's id.
type Mount struct {
	Destination string   `json:"destination"`
	Type        string   `json:"type"`
	Source      string   `json:"source"`
	Options     []string `json:"options"` // sorted
	Optional    bool     `json:"optional,omitempty"`
}

// Storage is a guest storage the container may name, by mount point.
type Storage struct {
	Driver     string `json:"driver"`
	Source     string `json:"source"`
	Fstype     string `json:"fstype"`
	MountPoint string `json:"mount_point"` // $(bundle-id) as in Mount
	// Options is a regular expression each option must match.
	Options string `json:"options"`
	// FSGroup is the pod's fsGroup a storage may be given; nil: none.
	FSGroup *int64 `json:"fs_group"`
}
