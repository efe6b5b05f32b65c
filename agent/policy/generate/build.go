package generate

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
)

// Guest paths the shim and agent use (runtime/shim/volumes.go,
// agent/volumes.go), as Kata's runtime names them.
const (
	sharedDir    = "/run/kata-containers/shared/containers"
	ephemeralDir = "/run/kata-containers/sandbox/ephemeral"
	localDir     = "/run/kata-containers/sandbox/storage"
	bundleID     = "$(bundle-id)"
)

// Regular expressions of values the host chooses.
const (
	reIPv4  = `(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])(\.(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])){3}`
	reIPv6  = `[0-9a-fA-F:]*:[0-9a-fA-F:.]*`
	reIP    = `(` + reIPv4 + `|` + reIPv6 + `)`
	rePort  = `[0-9]{1,5}`
	reLabel = `[a-z0-9]([-a-z0-9]*[a-z0-9])?`
	reDNS   = reLabel + `(\.` + reLabel + `)*`
	// copyName is the file name part of a copy: <container id>-<16 hex
	// digits of the host path's hash>-<the host file's name>.
	copyPrefix = "^" + sharedDir + "/" + bundleID + "-[0-9a-f]{16}-"
)

// defaultCaps are containerd's capabilities of an unprivileged container.
var defaultCaps = []string{"CAP_AUDIT_WRITE", "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL",
	"CAP_MKNOD", "CAP_NET_BIND_SERVICE", "CAP_NET_RAW", "CAP_SETFCAP", "CAP_SETGID", "CAP_SETPCAP", "CAP_SETUID", "CAP_SYS_CHROOT"}

// allCaps are Linux's capabilities: a privileged container's bounding set
// is the host kernel's, at most these.
var allCaps = []string{"CAP_AUDIT_CONTROL", "CAP_AUDIT_READ", "CAP_AUDIT_WRITE", "CAP_BLOCK_SUSPEND", "CAP_BPF",
	"CAP_CHECKPOINT_RESTORE", "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID",
	"CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_KILL", "CAP_LEASE", "CAP_LINUX_IMMUTABLE", "CAP_MAC_ADMIN", "CAP_MAC_OVERRIDE",
	"CAP_MKNOD", "CAP_NET_ADMIN", "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST", "CAP_NET_RAW", "CAP_PERFMON", "CAP_SETFCAP",
	"CAP_SETGID", "CAP_SETPCAP", "CAP_SETUID", "CAP_SYSLOG", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_CHROOT",
	"CAP_SYS_MODULE", "CAP_SYS_NICE", "CAP_SYS_PACCT", "CAP_SYS_PTRACE", "CAP_SYS_RAWIO", "CAP_SYS_RESOURCE",
	"CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_WAKE_ALARM"}

// Paths every containerd version masks or makes read-only in an
// unprivileged container (newer ones add more, which the rules allow).
var (
	maskedPaths   = []string{"/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/sched_debug", "/proc/scsi", "/proc/timer_list", "/proc/timer_stats", "/sys/firmware"}
	readonlyPaths = []string{"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"}
)

// serviceEnv are the variables the kubelet adds for a Service named svc
// (a regular expression of its name in upper case).
func serviceEnv(svc string) []string {
	proto, addr := `(TCP|UDP|SCTP)`, `(`+reIPv4+`|\[`+reIPv6+`\])`
	return []string{
		`^` + svc + `_SERVICE_HOST=` + reIP + `$`,
		`^` + svc + `_SERVICE_PORT=` + rePort + `$`,
		`^` + svc + `_SERVICE_PORT_[A-Z0-9_]+=` + rePort + `$`,
		`^` + svc + `_PORT=(tcp|udp|sctp)://` + addr + `:` + rePort + `$`,
		`^` + svc + `_PORT_` + rePort + `_` + proto + `=(tcp|udp|sctp)://` + addr + `:` + rePort + `$`,
		`^` + svc + `_PORT_` + rePort + `_` + proto + `_PROTO=(tcp|udp|sctp)$`,
		`^` + svc + `_PORT_` + rePort + `_` + proto + `_PORT=` + rePort + `$`,
		`^` + svc + `_PORT_` + rePort + `_` + proto + `_ADDR=` + reIP + `$`,
	}
}

// builder builds one workload's policy data.
type builder struct {
	m    *Manifests
	w    *Workload
	spec *corev1.PodSpec
	res  Resolver
}

func (b *builder) policyData(ctx context.Context, opts *Options) (*PolicyData, error) {
	b.spec = &b.w.Template.Spec
	pd := &PolicyData{Version: layoutVersion, Workload: b.w.Kind + "/" + b.w.Name, Namespace: b.w.Namespace,
		SandboxName: b.w.PodName, Containers: map[string]*Container{}, AllowExec: opts.AllowExec, AllowLogs: opts.AllowLogs}
	// Without service links the kubelet still adds the API server's.
	if b.spec.EnableServiceLinks == nil || *b.spec.EnableServiceLinks {
		pd.ServiceEnv = serviceEnv(`[A-Z_][A-Z0-9_]*`)
	} else {
		pd.ServiceEnv = serviceEnv(`KUBERNETES`)
	}
	if b.spec.HostNetwork || b.spec.HostPID || b.spec.HostIPC {
		return nil, fmt.Errorf("%w: %s: host namespaces (hostNetwork, hostPID, hostIPC) are not the host's in a confidential pod", ErrManifest, pd.Workload)
	}
	all := append(slices.Clone(b.spec.InitContainers), b.spec.Containers...)
	for i := range all {
		c := &all[i]
		if _, dup := pd.Containers[c.Name]; dup {
			return nil, fmt.Errorf("%w: %s: two containers named %q", ErrManifest, pd.Workload, c.Name)
		}
		pc, err := b.container(ctx, c)
		if err != nil {
			return nil, fmt.Errorf("%s container %s: %w", pd.Workload, c.Name, err)
		}
		pd.Containers[c.Name] = pc
	}
	return pd, nil
}

func (b *builder) container(ctx context.Context, c *corev1.Container) (*Container, error) {
	if c.Image == "" {
		return nil, fmt.Errorf("%w: no image", ErrManifest)
	}
	img, err := b.res.Resolve(ctx, c.Image)
	if err != nil {
		return nil, err
	}
	pc := &Container{Image: img.Ref, Terminal: c.TTY, Stdin: c.Stdin, SandboxPidns: b.spec.ShareProcessNamespace != nil && *b.spec.ShareProcessNamespace,
		Sysctls: map[string]string{}}
	if pc.Env, err = b.env(c, img); err != nil {
		return nil, err
	}
	if pc.Args, err = args(c, img, pc.Env); err != nil {
		return nil, err
	}
	pc.Cwd = c.WorkingDir
	if pc.Cwd == "" {
		pc.Cwd = img.Config.WorkingDir
	}
	if pc.Cwd == "" {
		pc.Cwd = "/"
	}
	if err := b.security(c, img, pc); err != nil {
		return nil, err
	}
	if err := b.mounts(c, pc); err != nil {
		return nil, err
	}
	for _, p := range []*corev1.Probe{c.LivenessProbe, c.ReadinessProbe, c.StartupProbe} {
		if p != nil && p.Exec != nil {
			pc.ExecCommands = append(pc.ExecCommands, p.Exec.Command)
		}
	}
	if l := c.Lifecycle; l != nil {
		for _, h := range []*corev1.LifecycleHandler{l.PostStart, l.PreStop} {
			if h != nil && h.Exec != nil {
				pc.ExecCommands = append(pc.ExecCommands, h.Exec.Command)
			}
		}
	}
	return pc, nil
}

// args is the process's argument vector as the kubelet and containerd
// make it: the pod's command, or the image's entrypoint, then the pod's
// args, or the image's cmd when the pod gives neither; $(VAR) references
// expand to the container's variables.
func args(c *corev1.Container, img *Image, env []EnvVar) ([]string, error) {
	var out []string
	switch {
	case len(c.Command) > 0:
		out = append(slices.Clone(c.Command), c.Args...)
	case len(c.Args) > 0:
		out = append(slices.Clone(img.Config.Entrypoint), c.Args...)
	default:
		out = append(slices.Clone(img.Config.Entrypoint), img.Config.Cmd...)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: neither the pod nor image %s says what to run", ErrManifest, img.Ref)
	}
	vars := map[string]*EnvVar{}
	for i := range env {
		vars[env[i].Name] = &env[i]
	}
	if len(c.Command) == 0 && len(c.Args) == 0 {
		return out, nil // the image's own are not expanded
	}
	for i, a := range out {
		if i < len(img.Config.Entrypoint) && len(c.Command) == 0 {
			continue
		}
		x, err := expand(a, vars)
		if err != nil {
			return nil, fmt.Errorf("argument %q: %w", a, err)
		}
		out[i] = x
	}
	return out, nil
}

// expand replaces $(VAR) with VAR's value and $$ with $, as the kubelet
// does; a reference to an unknown variable stays as written. A variable
// whose value the policy does not know exactly cannot be expanded.
func expand(s string, vars map[string]*EnvVar) (string, error) {
	var out strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '$' || i+1 == len(s) {
			out.WriteByte(s[i])
			continue
		}
		switch s[i+1] {
		case '$':
			out.WriteByte('$')
			i++
			continue
		case '(':
			end := strings.IndexByte(s[i+2:], ')')
			if end < 0 {
				out.WriteString(s[i:])
				return out.String(), nil
			}
			name := s[i+2 : i+2+end]
			v, ok := vars[name]
			switch {
			case !ok:
				out.WriteString(s[i : i+3+end])
			case v.Regex != "" || v.SHA256 != "" || v.SandboxName || v.Optional:
				return "", fmt.Errorf("%w: $(%s) has no value known ahead (downward API, Secret or optional reference)", ErrManifest, name)
			default:
				out.WriteString(v.Value)
			}
			i += 2 + end
			continue
		}
		out.WriteByte(s[i])
	}
	return out.String(), nil
}

// envName is a variable name the kubelet accepts from envFrom.
var envName = regexp.MustCompile(`^[-._a-zA-Z][-._a-zA-Z0-9]*$`)

// env is the container's environment: the image's, HOSTNAME, envFrom,
// env (later ones replacing earlier ones), TERM with a terminal.
func (b *builder) env(c *corev1.Container, img *Image) ([]EnvVar, error) {
	var vars []EnvVar
	index := map[string]int{}
	set := func(v EnvVar) {
		if i, ok := index[v.Name]; ok {
			vars[i] = v
			return
		}
		index[v.Name] = len(vars)
		vars = append(vars, v)
	}
	for _, kv := range img.Config.Env {
		name, value, _ := strings.Cut(kv, "=")
		set(EnvVar{Name: name, Value: value})
	}
	switch {
	case b.spec.Hostname != "":
		set(EnvVar{Name: "HOSTNAME", Value: b.spec.Hostname})
	default:
		set(EnvVar{Name: "HOSTNAME", SandboxName: true})
	}
	for _, from := range c.EnvFrom {
		fromVars, err := b.envFrom(from)
		if err != nil {
			return nil, err
		}
		for _, v := range fromVars {
			set(v)
		}
	}
	known := map[string]*EnvVar{}
	for _, e := range c.Env {
		v, err := b.envVar(e)
		if err != nil {
			return nil, fmt.Errorf("env %s: %w", e.Name, err)
		}
		if e.ValueFrom == nil {
			// A value may name variables defined before it.
			if v.Value, err = expand(e.Value, known); err != nil {
				return nil, fmt.Errorf("env %s: %w", e.Name, err)
			}
		}
		set(*v)
		known[v.Name] = &vars[index[v.Name]]
	}
	if c.TTY {
		set(EnvVar{Name: "TERM", Value: "xterm"})
	}
	return vars, nil
}

func (b *builder) envFrom(from corev1.EnvFromSource) ([]EnvVar, error) {
	kind, name, optional := "ConfigMap", "", (*bool)(nil)
	switch {
	case from.ConfigMapRef != nil:
		name, optional = from.ConfigMapRef.Name, from.ConfigMapRef.Optional
	case from.SecretRef != nil:
		kind, name, optional = "Secret", from.SecretRef.Name, from.SecretRef.Optional
	default:
		return nil, nil
	}
	data, ok := b.data(kind, name)
	if !ok {
		return nil, b.missing(kind, name, optional)
	}
	var out []EnvVar
	for _, k := range sortedKeys(data) {
		if !envName.MatchString(from.Prefix + k) {
			continue // the kubelet skips it
		}
		v := EnvVar{Name: from.Prefix + k, Value: string(data[k])}
		if kind == "Secret" {
			v = EnvVar{Name: v.Name, SHA256: sha(data[k])}
		}
		out = append(out, v)
	}
	return out, nil
}

// missing is the error for a ConfigMap or Secret the manifests lack: its
// values cannot be pinned. An optional whole-object reference is not.
func (b *builder) missing(kind, name string, optional *bool) error {
	if optional != nil && *optional {
		return fmt.Errorf("%w: optional %s %s/%s is not in the manifests: give it, or drop the reference (its variables cannot be pinned)", ErrManifest, kind, b.w.Namespace, name)
	}
	return fmt.Errorf("%w: %s %s/%s is not in the manifests (give its YAML too)", ErrManifest, kind, b.w.Namespace, name)
}

func (b *builder) envVar(e corev1.EnvVar) (*EnvVar, error) {
	v := EnvVar{Name: e.Name, Value: e.Value}
	f := e.ValueFrom
	switch {
	case f == nil:
	case f.ConfigMapKeyRef != nil:
		r := f.ConfigMapKeyRef
		val, unset, err := b.keyRef(e.Name, "ConfigMap", r.Name, r.Key, r.Optional)
		if unset != nil || err != nil {
			return cmp.Or(unset, &v), err
		}
		v.Value = string(val)
	case f.SecretKeyRef != nil:
		r := f.SecretKeyRef
		val, unset, err := b.keyRef(e.Name, "Secret", r.Name, r.Key, r.Optional)
		if unset != nil || err != nil {
			return cmp.Or(unset, &v), err
		}
		v.SHA256 = sha(val)
	case f.FieldRef != nil:
		return b.fieldRef(e.Name, f.FieldRef.FieldPath)
	case f.ResourceFieldRef != nil:
		v.Regex = `^[0-9]+$` // a quantity in whole divisor units, the node's when the pod sets no limit
	default:
		return nil, fmt.Errorf("%w: a source the generator does not know", ErrManifest)
	}
	return &v, nil
}

// data is a ConfigMap's or Secret's data, if the manifests hold it.
func (b *builder) data(kind, name string) (map[string][]byte, bool) {
	if kind == "Secret" {
		s, ok := b.m.Secrets[key(b.w.Namespace, name)]
		if !ok {
			return nil, false
		}
		return s.Data, true
	}
	cm, ok := b.m.ConfigMaps[key(b.w.Namespace, name)]
	if !ok {
		return nil, false
	}
	data := make(map[string][]byte, len(cm.Data))
	for k, v := range cm.Data {
		data[k] = []byte(v)
	}
	return data, true
}

// keyRef is a variable's value from a ConfigMap's or Secret's key; with
// an optional reference to a key the object lacks, the variable is unset.
func (b *builder) keyRef(name, kind, object, k string, optional *bool) ([]byte, *EnvVar, error) {
	data, ok := b.data(kind, object)
	val, found := data[k]
	switch {
	case found:
		return val, nil, nil
	case ok && optional != nil && *optional:
		return nil, &EnvVar{Name: name, Optional: true, Regex: "^$"}, nil
	}
	return nil, nil, b.missing(kind, object+" key "+k, optional)
}

// labelRef is a downward API reference to one label or annotation.
var labelRef = regexp.MustCompile(`^metadata\.(labels|annotations)\['([^']+)'\]$`)

// fieldRef is a downward API variable: exact when the manifests tell the
// value, else the form of the value the host chooses.
func (b *builder) fieldRef(name, field string) (*EnvVar, error) {
	v := EnvVar{Name: name}
	meta := &b.w.Template.ObjectMeta
	switch field {
	case "metadata.name":
		v.SandboxName = true
	case "metadata.namespace":
		v.Value = b.w.Namespace
	case "metadata.uid":
		v.Regex = `^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`
	case "spec.nodeName":
		v.Regex = "^" + reDNS + "$"
	case "spec.serviceAccountName":
		v.Value = b.spec.ServiceAccountName
		if v.Value == "" {
			v.Value = "default"
		}
	case "status.podIP", "status.hostIP":
		v.Regex = "^" + reIP + "$"
	case "status.podIPs", "status.hostIPs":
		v.Regex = "^" + reIP + "(," + reIP + ")?$"
	default:
		m := labelRef.FindStringSubmatch(field)
		if m == nil {
			return nil, fmt.Errorf("%w: downward API field %s", ErrManifest, field)
		}
		values := meta.Labels
		if m[1] == "annotations" {
			values = meta.Annotations
		}
		if val, ok := values[m[2]]; ok {
			v.Value = val
		} else {
			// Set by a controller (pod-template-hash, ...) or the host.
			v.Regex = `^.*$`
		}
	}
	return &v, nil
}

// security is the process's user, capabilities and the container's
// confinement, as containerd derives them from the security context.
func (b *builder) security(c *corev1.Container, img *Image, pc *Container) error {
	psc := b.spec.SecurityContext
	if psc == nil {
		psc = &corev1.PodSecurityContext{}
	}
	sc := c.SecurityContext
	if sc == nil {
		sc = &corev1.SecurityContext{}
	}
	uid, gid, err := imageUser(img)
	if err != nil {
		return err
	}
	// The container's setting wins over the pod's, both over the image's.
	for _, id := range []struct {
		v        *int64
		ctr, pod *int64
	}{{&uid, sc.RunAsUser, psc.RunAsUser}, {&gid, sc.RunAsGroup, psc.RunAsGroup}} {
		if s := cmp.Or(id.ctr, id.pod); s != nil {
			*id.v = *s
		}
	}
	if (sc.RunAsNonRoot != nil && *sc.RunAsNonRoot || psc.RunAsNonRoot != nil && *psc.RunAsNonRoot) && uid == 0 {
		return fmt.Errorf("%w: runAsNonRoot, but the container runs as root", ErrManifest)
	}
	groups := []int64{gid}
	groups = append(groups, psc.SupplementalGroups...)
	if psc.FSGroup != nil {
		groups = append(groups, *psc.FSGroup)
	}
	slices.Sort(groups)
	pc.User = User{UID: uid, GID: gid, AdditionalGids: slices.Compact(groups)}

	pc.Privileged = sc.Privileged != nil && *sc.Privileged
	pc.ReadonlyRoot = sc.ReadOnlyRootFilesystem != nil && *sc.ReadOnlyRootFilesystem
	pc.NoNewPrivileges = sc.AllowPrivilegeEscalation != nil && !*sc.AllowPrivilegeEscalation
	if pc.Privileged {
		pc.Capabilities = allCaps
	} else {
		pc.Capabilities = capabilities(sc.Capabilities)
		if sc.ProcMount == nil || *sc.ProcMount != corev1.UnmaskedProcMount {
			pc.MaskedPaths, pc.ReadonlyPaths = maskedPaths, readonlyPaths
		}
	}
	for _, s := range psc.Sysctls {
		pc.Sysctls[s.Name] = s.Value
	}
	return nil
}

// capabilities is the default set with the context's added and dropped.
func capabilities(c *corev1.Capabilities) []string {
	caps := slices.Clone(defaultCaps)
	if c == nil {
		return caps
	}
	name := func(c corev1.Capability) string {
		s := strings.ToUpper(string(c))
		if !strings.HasPrefix(s, "CAP_") {
			s = "CAP_" + s
		}
		return s
	}
	for _, a := range c.Add {
		if name(a) == "CAP_ALL" {
			caps = slices.Clone(allCaps)
			continue
		}
		caps = append(caps, name(a))
	}
	for _, d := range c.Drop {
		if name(d) == "CAP_ALL" {
			caps = nil
			continue
		}
		caps = slices.DeleteFunc(caps, func(s string) bool { return s == name(d) })
	}
	slices.Sort(caps)
	return slices.Compact(caps)
}

// imageUser is the image's numeric user and group. A user name would be
// looked up in the image's /etc/passwd, which a host that never sees the
// image's layers cannot read: such images need runAsUser.
func imageUser(img *Image) (uid, gid int64, err error) {
	u := img.Config.User
	if u == "" {
		return 0, 0, nil
	}
	user, group, hasGroup := strings.Cut(u, ":")
	if uid, err = strconv.ParseInt(user, 10, 64); err != nil {
		return 0, 0, fmt.Errorf("%w: image %s runs as user name %q, which the host cannot resolve for an image pulled in the guest: set runAsUser (and runAsGroup)", ErrManifest, img.Ref, user)
	}
	if hasGroup {
		if gid, err = strconv.ParseInt(group, 10, 64); err != nil {
			return 0, 0, fmt.Errorf("%w: image %s runs as group name %q: set runAsGroup", ErrManifest, img.Ref, group)
		}
	}
	return uid, gid, nil
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
