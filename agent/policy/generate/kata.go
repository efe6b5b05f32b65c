package generate

import (
	_ "embed"
	"encoding/json"
	"strings"
)

// Kata's layout: genpolicy's policy_data (containers with their OCI
// expectations, storages, exec_commands and sandbox_pidns; common; and
// request_defaults), which Kata's tooling and Trustee's
// agent_policy_claims readers know. Values genpolicy's layout has no place
// for (forms and digests of variables, optional mounts) are extra keys of a
// container. The rules are this package's, reading that layout through
// kata.rego; they keep Kata's conventions (Rego v0 with future keywords, as
// Kata's agent evaluates with regorus).

//go:embed kata.rego
var kataAdapter string

// kataData is genpolicy's policy_data layout.
type kataData struct {
	Containers      []kataContainer `json:"containers"`
	Common          kataCommon      `json:"common"`
	RequestDefaults kataDefaults    `json:"request_defaults"`
	// Workload and SandboxName: which pods the containers are for.
	Workload    string `json:"workload"`
	SandboxName string `json:"sandbox_name"`
}

type kataCommon struct {
	Cpath    string `json:"cpath"`
	RootPath string `json:"root_path"`
	Sfprefix string `json:"sfprefix"`
}

type kataDefaults struct {
	CreateContainerRequest struct {
		AllowEnvRegex []string `json:"allow_env_regex"`
	} `json:"CreateContainerRequest"`
	CopyFileRequest    []string `json:"CopyFileRequest"`
	ExecProcessRequest struct {
		AllowedCommands [][]string `json:"allowed_commands"`
		Regex           []string   `json:"regex"`
	} `json:"ExecProcessRequest"`
	ReadStreamRequest  bool `json:"ReadStreamRequest"`
	WriteStreamRequest bool `json:"WriteStreamRequest"`
}

type kataContainer struct {
	OCI          kataOCI    `json:"OCI"`
	Storages     []Storage  `json:"storages"`
	SandboxPidns bool       `json:"sandbox_pidns"`
	ExecCommands [][]string `json:"exec_commands"`
	// Beyond genpolicy's layout.
	EnvRegex       map[string]string `json:"env_regex"`
	EnvSHA256      map[string]string `json:"env_sha256"`
	EnvOptional    []string          `json:"env_optional"`
	OptionalMounts []string          `json:"optional_mounts"`
	Privileged     bool              `json:"privileged"`
	Stdin          bool              `json:"stdin"`
}

type kataOCI struct {
	Annotations map[string]string `json:"Annotations"`
	Process     kataProcess       `json:"Process"`
	Root        kataRoot          `json:"Root"`
	Mounts      []kataMount       `json:"Mounts"`
	Linux       kataLinux         `json:"Linux"`
}

type kataProcess struct {
	Terminal        bool             `json:"Terminal"`
	User            kataUser         `json:"User"`
	Args            []string         `json:"Args"`
	Env             []string         `json:"Env"`
	Cwd             string           `json:"Cwd"`
	Capabilities    kataCapabilities `json:"Capabilities"`
	NoNewPrivileges bool             `json:"NoNewPrivileges"`
}

type kataUser struct {
	UID            int64   `json:"UID"`
	GID            int64   `json:"GID"`
	AdditionalGids []int64 `json:"AdditionalGids"`
	Username       string  `json:"Username"`
}

type kataCapabilities struct {
	Ambient     []string `json:"Ambient"`
	Bounding    []string `json:"Bounding"`
	Effective   []string `json:"Effective"`
	Inheritable []string `json:"Inheritable"`
	Permitted   []string `json:"Permitted"`
}

type kataRoot struct {
	Path     string `json:"Path"`
	Readonly bool   `json:"Readonly"`
}

type kataMount struct {
	Destination string   `json:"destination"`
	Source      string   `json:"source"`
	Type        string   `json:"type_"`
	Options     []string `json:"options"`
}

type kataLinux struct {
	Namespaces    []kataNamespace   `json:"Namespaces"`
	MaskedPaths   []string          `json:"MaskedPaths"`
	ReadonlyPaths []string          `json:"ReadonlyPaths"`
	Devices       []any             `json:"Devices"`
	Sysctl        map[string]string `json:"Sysctl"`
}

type kataNamespace struct {
	Type string `json:"Type"`
	Path string `json:"Path"`
}

// genpolicy's placeholders.
const (
	kataRootPath  = "$(root_path)"
	kataSfprefix  = "$(sfprefix)"
	kataSandboxNm = "$(sandbox-name)"
)

// kataPolicy is the policy in Kata's layout.
func kataPolicy(pd *PolicyData) (string, error) {
	kd := kataData{Workload: pd.Workload, SandboxName: pd.SandboxName,
		Common: kataCommon{Cpath: sharedDir, RootPath: "/run/kata-containers/" + bundleID + "/rootfs", Sfprefix: copyPrefix}}
	d := &kd.RequestDefaults
	d.CreateContainerRequest.AllowEnvRegex = pd.ServiceEnv
	d.CopyFileRequest = []string{kataSfprefix}
	d.ExecProcessRequest.AllowedCommands = [][]string{}
	d.ExecProcessRequest.Regex = []string{}
	if pd.AllowExec {
		d.ExecProcessRequest.Regex = []string{"^.*$"}
	}
	d.ReadStreamRequest, d.WriteStreamRequest = pd.AllowLogs, pd.AllowExec
	for _, name := range sortedKeys(pd.Containers) {
		kd.Containers = append(kd.Containers, kataContainerOf(pd, name))
	}
	b, err := json.Marshal(kd)
	if err != nil {
		return "", err
	}
	return strings.Replace(rules, "pod := policy_data\n", kataAdapter, 1) + "\npolicy_data := " + string(b) + "\n", nil
}

func kataContainerOf(pd *PolicyData, name string) kataContainer {
	c := pd.Containers[name]
	kc := kataContainer{Storages: c.Storages, SandboxPidns: c.SandboxPidns, ExecCommands: c.ExecCommands,
		EnvRegex: map[string]string{}, EnvSHA256: map[string]string{}, EnvOptional: []string{}, OptionalMounts: []string{},
		Privileged: c.Privileged, Stdin: c.Stdin}
	if kc.ExecCommands == nil {
		kc.ExecCommands = [][]string{}
	}
	env := []string{}
	for _, v := range c.Env {
		switch {
		case v.SandboxName:
			env = append(env, v.Name+"="+kataSandboxNm)
		case v.Regex != "":
			kc.EnvRegex[v.Name] = v.Regex
		case v.SHA256 != "":
			kc.EnvSHA256[v.Name] = v.SHA256
		default:
			env = append(env, v.Name+"="+v.Value)
		}
		if v.Optional {
			kc.EnvOptional = append(kc.EnvOptional, v.Name)
		}
	}
	caps := c.Capabilities
	kc.OCI = kataOCI{
		Annotations: map[string]string{
			"io.kubernetes.cri.container-name":         name,
			"io.kubernetes.cri.container-type":         "container",
			"io.kubernetes.cri.image-name":             c.Image,
			"io.kubernetes.cri.sandbox-namespace":      pd.Namespace,
			"io.kubernetes.cri.sandbox-name":           pd.SandboxName,
			"io.katacontainers.pkg.oci.container_type": "pod_container",
		},
		Process: kataProcess{Terminal: c.Terminal, Args: c.Args, Env: env, Cwd: c.Cwd, NoNewPrivileges: c.NoNewPrivileges,
			User:         kataUser{UID: c.User.UID, GID: c.User.GID, AdditionalGids: c.User.AdditionalGids},
			Capabilities: kataCapabilities{Ambient: []string{}, Bounding: caps, Effective: caps, Inheritable: []string{}, Permitted: caps}},
		Root:  kataRoot{Path: kataRootPath, Readonly: c.ReadonlyRoot},
		Linux: kataLinux{Namespaces: []kataNamespace{{"ipc", ""}, {"uts", ""}, {"mount", ""}}, Devices: []any{}, Sysctl: c.Sysctls},
	}
	kc.OCI.Linux.MaskedPaths, kc.OCI.Linux.ReadonlyPaths = nonNil(c.MaskedPaths), nonNil(c.ReadonlyPaths)
	for _, m := range c.Mounts {
		kc.OCI.Mounts = append(kc.OCI.Mounts, kataMount{Destination: m.Destination, Source: strings.Replace(m.Source, copyPrefix, kataSfprefix, 1),
			Type: m.Type, Options: m.Options})
		if m.Optional {
			kc.OptionalMounts = append(kc.OptionalMounts, m.Destination)
		}
	}
	return kc
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}
