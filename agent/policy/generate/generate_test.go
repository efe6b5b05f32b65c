package generate

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/cocoon-cc/cocoon/agent/policy"
	"github.com/cocoon-cc/cocoon/image/imagetest"
	"github.com/cocoon-cc/cocoon/initdata"
)

// images is a local registry (docker-registry) with the tests' images:
// busybox:1 as k8stest pushes it, and app:1 with an entrypoint, a working
// directory and a numeric user.
type images struct {
	host     string
	resolver *Registry
}

func testImages(t *testing.T) *images {
	t.Helper()
	reg := imagetest.StartRegistry(t)
	layer := imagetest.GzipLayer(t, imagetest.File("etc/motd", "hello\n", 0o644))
	reg.Push(t, imagetest.New(t, ocispec.ImageConfig{Cmd: []string{"/bin/sh"}, Env: []string{"PATH=/bin"}}, layer), "busybox:1", nil)
	reg.Push(t, imagetest.New(t, ocispec.ImageConfig{Entrypoint: []string{"/app"}, Cmd: []string{"--serve"},
		Env: []string{"PATH=/usr/bin", "HOME=/"}, WorkingDir: "/srv", User: "1234:5678"}, layer), "app:1", nil)
	reg.Push(t, imagetest.New(t, ocispec.ImageConfig{Cmd: []string{"/bin/sh"}, User: "nobody"}, layer), "named:1", nil)
	return &images{host: reg.Host, resolver: &Registry{Insecure: true}}
}

func (im *images) generate(t *testing.T, yaml string, opts Options) (*Manifests, []*Pod) {
	t.Helper()
	m, err := Parse([]byte(strings.ReplaceAll(yaml, "REGISTRY", im.host)))
	if err != nil {
		t.Fatal(err)
	}
	opts.Resolver = im.resolver
	pods, err := Generate(context.Background(), m, opts)
	if err != nil {
		t.Fatal(err)
	}
	return m, pods
}

// TestWorkloadKinds: each kind's pod template gets the annotation and its
// images' digests; the policy names the pods the kind's controller makes.
func TestWorkloadKinds(t *testing.T) {
	im := testImages(t)
	container := `
      containers:
      - {name: c, image: REGISTRY/busybox:1}`
	for kind, tc := range map[string]struct {
		yaml        string
		pods, other []string
	}{
		"Pod": {"apiVersion: v1\nkind: Pod\nmetadata: {name: web}\nspec:\n  containers:\n  - {name: c, image: REGISTRY/busybox:1}\n",
			[]string{"web"}, []string{"web-1", "webb"}},
		"Deployment": {"apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web, namespace: shop}\nspec:\n  selector: {matchLabels: {a: b}}\n  template:\n    metadata: {labels: {a: b}}\n    spec:" + container,
			[]string{"web-654bd457fb-hl8ql", "web-7d4b9c-abcde"}, []string{"web-abcde", "web2-654bd457fb-hl8ql"}},
		"ReplicaSet": {"apiVersion: apps/v1\nkind: ReplicaSet\nmetadata: {name: web}\nspec:\n  selector: {matchLabels: {a: b}}\n  template:\n    metadata: {labels: {a: b}}\n    spec:" + container,
			[]string{"web-x7k2p"}, []string{"web-1-x7k2p"}},
		"StatefulSet": {"apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {name: db}\nspec:\n  selector: {matchLabels: {a: b}}\n  serviceName: db\n  template:\n    metadata: {labels: {a: b}}\n    spec:" + container,
			[]string{"db-0", "db-12"}, []string{"db-01", "db-x7k2p"}},
		"DaemonSet": {"apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {name: agent}\nspec:\n  selector: {matchLabels: {a: b}}\n  template:\n    metadata: {labels: {a: b}}\n    spec:" + container,
			[]string{"agent-x7k2p"}, []string{"agent-0"}},
		"Job": {"apiVersion: batch/v1\nkind: Job\nmetadata: {name: once}\nspec:\n  template:\n    spec:\n      restartPolicy: Never" + container,
			[]string{"once-x7k2p", "once-3-x7k2p"}, []string{"once"}},
		"CronJob": {"apiVersion: batch/v1\nkind: CronJob\nmetadata: {name: tick}\nspec:\n  schedule: '* * * * *'\n  jobTemplate:\n    spec:\n      template:\n        spec:\n          restartPolicy: Never\n          containers:\n          - {name: c, image: REGISTRY/busybox:1}",
			[]string{"tick-29412345-x7k2p"}, []string{"tick-x7k2p"}},
	} {
		t.Run(kind, func(t *testing.T) {
			m, pods := im.generate(t, tc.yaml, Options{})
			if len(pods) != 1 || pods[0].Workload.Kind != kind {
				t.Fatalf("pods %v", pods)
			}
			pd := pods[0].Data
			for _, name := range tc.pods {
				if !regexp.MustCompile(pd.SandboxName).MatchString(name) {
					t.Errorf("pod %s is not the %s's (%s)", name, kind, pd.SandboxName)
				}
			}
			for _, name := range tc.other {
				if regexp.MustCompile(pd.SandboxName).MatchString(name) {
					t.Errorf("pod %s is taken for the %s's (%s)", name, kind, pd.SandboxName)
				}
			}
			out, err := m.Write()
			if err != nil {
				t.Fatal(err)
			}
			// The output is the input with the annotation and digests, and
			// the policy is read back from it.
			again, err := Parse(out)
			if err != nil {
				t.Fatal(err)
			}
			w := again.Workloads[0]
			if got := w.Template.Spec.Containers[0].Image; got != pd.Containers["c"].Image || !strings.Contains(got, "/busybox@sha256:") {
				t.Errorf("image in the output %q, policy %q", got, pd.Containers["c"].Image)
			}
			text, err := PolicyOf(out)
			if err != nil || text != pods[0].Policy {
				t.Fatalf("policy read back: %v", err)
			}
			if _, err := policy.New(context.Background(), text); err != nil {
				t.Fatalf("the agent does not load the policy: %v", err)
			}
		})
	}
}

// recorded is the CreateContainerRequest's input of testdata/deployment.yaml's
// container as a real node sent it (test/k8s), with its image.
func recorded(t *testing.T, image string) map[string]any {
	t.Helper()
	b, err := os.ReadFile("testdata/CreateContainerRequest.json")
	if err != nil {
		t.Fatal(err)
	}
	var r map[string]any
	if err := json.Unmarshal([]byte(strings.ReplaceAll(string(b), "IMAGE", image)), &r); err != nil {
		t.Fatal(err)
	}
	return r
}

// check decides a request on a fresh engine (or e) and returns the error.
func check(t *testing.T, e *policy.Engine, rule string, input any) error {
	t.Helper()
	b, err := json.Marshal(input)
	if err != nil {
		t.Fatal(err)
	}
	return e.CheckInput(context.Background(), rule, b)
}

func engine(t *testing.T, text string) *policy.Engine {
	t.Helper()
	e, err := policy.New(context.Background(), text)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// at walks a decoded JSON object.
func at(v any, path ...any) any {
	for _, p := range path {
		switch k := p.(type) {
		case string:
			v = v.(map[string]any)[k]
		case int:
			v = v.([]any)[k]
		}
	}
	return v
}

func deploymentPolicy(t *testing.T, im *images, opts Options) (*Pod, string) {
	t.Helper()
	b, err := os.ReadFile("testdata/deployment.yaml")
	if err != nil {
		t.Fatal(err)
	}
	_, pods := im.generate(t, strings.ReplaceAll(string(b), "IMAGE", "REGISTRY/busybox:1"), opts)
	return pods[0], pods[0].Data.Containers["app"].Image
}

// TestRecordedRequest: the policy of testdata/deployment.yaml (ConfigMap
// and Secret env, downward API, volumes, exec probe, security context)
// allows the request a real node made for it, and refuses every change
// the host could make to it, naming the field.
func TestRecordedRequest(t *testing.T) {
	im := testImages(t)
	for _, format := range []string{FormatCocoon, FormatKata} {
		t.Run(format, func(t *testing.T) { testRecordedRequest(t, im, format) })
	}
}

func testRecordedRequest(t *testing.T, im *images, format string) {
	pod, image := deploymentPolicy(t, im, Options{Format: format})
	if strings.Contains(pod.Policy, "s3cret") {
		t.Fatal("the policy carries the Secret's value")
	}
	if err := check(t, engine(t, pod.Policy), "CreateContainerRequest", recorded(t, image)); err != nil {
		t.Fatalf("the node's request: %v", err)
	}
	for name, tc := range map[string]struct {
		change func(r map[string]any)
		field  string
	}{
		"command": {func(r map[string]any) { at(r, "OCI", "Process").(map[string]any)["Args"] = []any{"/bin/sh"} }, "OCI.Process.Args"},
		"argument": {func(r map[string]any) {
			at(r, "OCI", "Process", "Args").([]any)[2] = "echo hello; exec sleep 1000"
		}, "OCI.Process.Args"},
		"env value": {func(r map[string]any) { setEnv(r, "GREETING", "bye") }, `OCI.Process.Env: "GREETING" is not the policy's`},
		"secret":    {func(r map[string]any) { setEnv(r, "PASSWORD", "guess") }, `"PASSWORD" is not the policy's`},
		"env added": {func(r map[string]any) { addEnv(r, "LD_PRELOAD=/tmp/x.so") }, `"LD_PRELOAD" is not the policy's`},
		"env twice": {func(r map[string]any) { addEnv(r, "GREETING=hello") }, `"GREETING" is set twice`},
		"env dropped": {func(r map[string]any) {
			env := at(r, "OCI", "Process").(map[string]any)
			env["Env"] = env["Env"].([]any)[1:]
		}, `"PATH" is missing`},
		"pod name env":  {func(r map[string]any) { setEnv(r, "POD_NAME", "other") }, `"POD_NAME" is not the policy's`},
		"pod IP":        {func(r map[string]any) { setEnv(r, "POD_IP", "10.0.0.1; rm") }, `"POD_IP" is not the policy's`},
		"service env":   {func(r map[string]any) { addEnv(r, "EVIL_SERVICE_HOST=10.0.0.9") }, ""},
		"bad svc value": {func(r map[string]any) { addEnv(r, "EVIL_SERVICE_HOST=x") }, `"EVIL_SERVICE_HOST" is not the policy's`},
		"image": {func(r map[string]any) {
			at(r, "OCI", "Annotations").(map[string]any)["io.kubernetes.cri.image-name"] = strings.Replace(image, "busybox", "app", 1)
		}, "image: "},
		"image storage": {func(r map[string]any) {
			at(r, "storages", 0).(map[string]any)["source"] = im.host + "/busybox:1"
		}, "storages: "},
		"privileged": {func(r map[string]any) {
			caps := at(r, "OCI", "Process", "Capabilities").(map[string]any)
			caps["Bounding"] = append(caps["Bounding"].([]any), "CAP_SYS_ADMIN")
			at(r, "OCI", "Linux").(map[string]any)["MaskedPaths"] = []any{}
			at(r, "OCI", "Mounts", 4).(map[string]any)["options"] = []any{"nosuid", "noexec", "nodev", "rw"}
		}, "OCI.Process.Capabilities"},
		"user": {func(r map[string]any) { at(r, "OCI", "Process", "User").(map[string]any)["UID"] = 0 }, "OCI.Process.User"},
		"groups": {func(r map[string]any) {
			at(r, "OCI", "Process", "User").(map[string]any)["AdditionalGids"] = []any{0, 2000, 6}
		}, "OCI.Process.User"},
		"cwd":       {func(r map[string]any) { at(r, "OCI", "Process").(map[string]any)["Cwd"] = "/tmp" }, "OCI.Process.Cwd"},
		"writable":  {func(r map[string]any) { at(r, "OCI", "Root").(map[string]any)["Readonly"] = false }, "OCI.Root"},
		"new privs": {func(r map[string]any) { at(r, "OCI", "Process").(map[string]any)["NoNewPrivileges"] = false }, "OCI.Process.NoNewPrivileges"},
		"mount added": {func(r map[string]any) {
			oci := at(r, "OCI").(map[string]any)
			oci["Mounts"] = append(oci["Mounts"].([]any), map[string]any{"destination": "/data", "source": "/srv", "type_": "bind", "options": []any{"rbind"}})
		}, `OCI.Mounts: "/data" ("bind" from "/srv", ["rbind"]) is not the policy's`},
		"mount source": {func(r map[string]any) {
			at(r, "OCI", "Mounts", 8).(map[string]any)["source"] = "/run/kata-containers/shared/containers/" + strings.Repeat("0123456789abcdef", 4) + "-0000000000000000-sec"
		}, `"/etc/cfg" ("bind" from`},
		"mount writable": {func(r map[string]any) {
			at(r, "OCI", "Mounts", 9).(map[string]any)["options"] = []any{"rbind", "rprivate", "rw"}
		}, `"/etc/sec"`},
		"volume dropped": {func(r map[string]any) {
			oci := at(r, "OCI").(map[string]any)
			oci["Mounts"] = append(oci["Mounts"].([]any)[:8], oci["Mounts"].([]any)[9:]...)
		}, `"/etc/cfg" is missing`},
		"mount hidden": {func(r map[string]any) {
			oci := at(r, "OCI").(map[string]any)
			ms := oci["Mounts"].([]any)
			oci["Mounts"] = append(append([]any{ms[2]}, ms[:2]...), ms[3:]...) // /dev/pts before /dev
		}, `"/dev/pts" is hidden by a later mount`},
		"masked paths": {func(r map[string]any) { at(r, "OCI", "Linux").(map[string]any)["MaskedPaths"] = []any{} }, "OCI.Linux.MaskedPaths"},
		"sysctl": {func(r map[string]any) {
			at(r, "OCI", "Linux").(map[string]any)["Sysctl"] = map[string]any{"kernel.shm_rmid_forced": "1"}
		}, "OCI.Linux.Sysctl"},
		"device": {func(r map[string]any) {
			at(r, "OCI", "Linux").(map[string]any)["Devices"] = []any{map[string]any{"Path": "/dev/kvm"}}
		}, "OCI.Linux.Devices"},
		"namespace path": {func(r map[string]any) {
			at(r, "OCI", "Linux", "Namespaces", 0).(map[string]any)["Path"] = "/proc/1/ns/ipc"
		}, "OCI.Linux.Namespaces"},
		"other pod": {func(r map[string]any) {
			at(r, "OCI", "Annotations").(map[string]any)["io.kubernetes.cri.sandbox-name"] = "db-654bd457fb-hl8ql"
		}, "OCI.Annotations"},
		"other namespace": {func(r map[string]any) {
			at(r, "OCI", "Annotations").(map[string]any)["io.kubernetes.cri.sandbox-namespace"] = "kube-system"
		}, "OCI.Annotations"},
		"unknown container": {func(r map[string]any) {
			at(r, "OCI", "Annotations").(map[string]any)["io.kubernetes.cri.container-name"] = "debugger"
		}, `container "debugger" is not in the pod's policy`},
		"hooks": {func(r map[string]any) { at(r, "OCI").(map[string]any)["Hooks"] = map[string]any{} }, "runtime-only fields"},
		"storage": {func(r map[string]any) {
			r["storages"] = append(r["storages"].([]any), map[string]any{"driver": "local", "source": "local", "fstype": "local",
				"mount_point": "/run/kata-containers/sandbox/storage/other", "options": []any{}, "fs_group": nil, "shared": false, "driver_options": []any{}})
		}, "storages: "},
		"scratch disk": {func(r map[string]any) { scratchDisk(r) }, ""},
		"scratch disk key": {func(r map[string]any) {
			scratchDisk(r)["driver_options"] = []any{"encryption_key=kbs:///default/k/k", "create_filesystem"}
		}, "storages: "},
		"scratch disk path": {func(r map[string]any) {
			scratchDisk(r)["mount_point"] = "/run/kata-containers/sandbox/storage/scratch"
		}, "storages: "},
		"container id":  {func(r map[string]any) { r["container_id"] = ".*" }, "container_id"},
		"field missing": {func(r map[string]any) { delete(at(r, "OCI", "Process").(map[string]any), "Env") }, "OCI.Process.Env"},
	} {
		t.Run(name, func(t *testing.T) {
			r := recorded(t, image)
			tc.change(r)
			err := check(t, engine(t, pod.Policy), "CreateContainerRequest", r)
			if tc.field == "" { // a change the kubelet makes
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if err == nil || !errors.Is(err, policy.ErrDenied) {
				t.Fatalf("allowed (%v)", err)
			}
			if !strings.Contains(err.Error(), tc.field) {
				t.Errorf("the refusal does not name %q: %v", tc.field, err)
			}
		})
	}
}

// scratchDisk makes the request's disk emptyDir (/scratch) what a VM pod's
// shim sends: an encrypted scratch disk at PCI path 10/00.
func scratchDisk(r map[string]any) map[string]any {
	s := at(r, "storages", 1).(map[string]any)
	s["driver"], s["source"], s["fstype"], s["options"], s["shared"] = "blk", "10/00", "ext4", []any{}, true
	s["mount_point"] = "/run/kata-containers/sandbox/storage/MTAvMDA="
	s["driver_options"] = []any{"encryption_key=ephemeral", "create_filesystem"}
	at(r, "OCI", "Mounts", 6).(map[string]any)["source"] = s["mount_point"]
	return s
}

func setEnv(r map[string]any, name, value string) {
	env := at(r, "OCI", "Process", "Env").([]any)
	for i, e := range env {
		if strings.HasPrefix(e.(string), name+"=") {
			env[i] = name + "=" + value
		}
	}
}

func addEnv(r map[string]any, kv string) {
	p := at(r, "OCI", "Process").(map[string]any)
	p["Env"] = append(p["Env"].([]any), kv)
}

// TestExecAndLogs: the probe's command runs, as the container's process
// runs; other commands and output only with the flags.
func TestExecAndLogs(t *testing.T) {
	im := testImages(t)
	exec := func(r map[string]any, args ...any) map[string]any {
		p := map[string]any{}
		for k, v := range at(r, "OCI", "Process").(map[string]any) {
			p[k] = v
		}
		p["Args"] = args
		return map[string]any{"container_id": r["container_id"], "exec_id": "probe", "process": p, "string_user": nil}
	}
	for _, tc := range []struct {
		opts        Options
		other, logs bool
	}{{Options{}, false, false}, {Options{AllowExec: true, AllowLogs: true}, true, true},
		{Options{Format: FormatKata}, false, false}, {Options{Format: FormatKata, AllowExec: true, AllowLogs: true}, true, true}} {
		pod, image := deploymentPolicy(t, im, tc.opts)
		e := engine(t, pod.Policy)
		r := recorded(t, image)
		start := map[string]any{"container_id": r["container_id"]}
		if err := check(t, e, "StartContainerRequest", start); err == nil {
			t.Error("a container the policy did not see created starts")
		}
		if err := check(t, e, "ExecProcessRequest", exec(r, "cat", "/tmp/ready")); err == nil {
			t.Error("an exec before its container's creation is allowed")
		}
		if err := check(t, e, "CreateContainerRequest", r); err != nil {
			t.Fatal(err)
		}
		if err := check(t, e, "StartContainerRequest", start); err != nil {
			t.Error(err)
		}
		if err := check(t, e, "ExecProcessRequest", exec(r, "cat", "/tmp/ready")); err != nil {
			t.Errorf("the probe: %v", err)
		}
		if err := check(t, e, "ExecProcessRequest", exec(r, "cat", "/etc/sec/password")); (err == nil) != tc.other {
			t.Errorf("another command (allow exec %v): %v", tc.other, err)
		}
		probe := exec(r, "cat", "/tmp/ready")
		addEnv(map[string]any{"OCI": map[string]any{"Process": probe["process"]}}, "LD_PRELOAD=/x.so")
		if err := check(t, e, "ExecProcessRequest", probe); err == nil {
			t.Error("the probe with another environment is allowed")
		}
		if err := check(t, e, "ReadStreamRequest", map[string]any{"container_id": r["container_id"], "exec_id": "probe", "len": 10}); (err == nil) != tc.logs {
			t.Errorf("read stream (allow logs %v): %v", tc.logs, err)
		}
		term := map[string]any{"container_id": r["container_id"], "path": "/dev/termination-log", "len": 3}
		if err := check(t, e, "TerminationMessageRequest", term); (err == nil) != tc.logs {
			t.Errorf("termination message (allow logs %v): %v", tc.logs, err)
		}
		write := map[string]any{"container_id": r["container_id"], "exec_id": "probe", "data": []any{104}}
		if err := check(t, e, "WriteStreamRequest", write); (err == nil) != tc.other {
			t.Errorf("write to an exec's stdin (allow exec %v): %v", tc.other, err)
		}
		for path, ok := range map[string]bool{
			"/run/kata-containers/shared/containers/" + r["container_id"].(string) + "-29e75738b2f06d31-cfg/..data/greeting": true,
			"/run/kata-containers/shared/containers/" + r["container_id"].(string) + "-29e75738b2f06d31-cfg/../../x":         false,
			"/etc/passwd": false,
		} {
			in := map[string]any{"path": path, "file_type": "Regular", "symlink_target": nil}
			if err := check(t, e, "CopyFileRequest", in); (err == nil) != ok {
				t.Errorf("copy %s: %v", path, err)
			}
		}
	}
}

// TestNetworkRequests: the pod's network as the shim describes it is
// allowed, never on loopback.
func TestNetworkRequests(t *testing.T) {
	im := testImages(t)
	pod, _ := deploymentPolicy(t, im, Options{})
	for _, tc := range []struct {
		rule   string
		change func(r map[string]any)
		ok     bool
	}{
		{"UpdateInterfaceRequest", func(map[string]any) {}, true},
		{"UpdateInterfaceRequest", func(r map[string]any) { at(r, "interface").(map[string]any)["name"] = "lo" }, false},
		{"UpdateInterfaceRequest", func(r map[string]any) { at(r, "interface").(map[string]any)["raw_flags"] = 0x11043 }, true}, // a CNI veth's
		{"UpdateInterfaceRequest", func(r map[string]any) { at(r, "interface").(map[string]any)["raw_flags"] = 0x1143 }, false}, // PROMISC
		{"UpdateRoutesRequest", func(map[string]any) {}, true},
		{"UpdateRoutesRequest", func(r map[string]any) { at(r, "routes", "Routes", 0).(map[string]any)["source"] = "127.0.0.1" }, false},
		{"UpdateRoutesRequest", func(r map[string]any) { at(r, "routes", "Routes", 0).(map[string]any)["device"] = "lo" }, false},
		{"AddARPNeighborsRequest", func(map[string]any) {}, true},
		{"AddARPNeighborsRequest", func(r map[string]any) {
			at(r, "neighbors", "ARPNeighbors", 0, "toIPAddress").(map[string]any)["address"] = "::1"
		}, false},
	} {
		b, err := os.ReadFile("../testdata/input/" + tc.rule + ".json")
		if err != nil {
			t.Fatal(err)
		}
		var r map[string]any
		if err := json.Unmarshal(b, &r); err != nil {
			t.Fatal(err)
		}
		tc.change(r)
		if err := check(t, engine(t, pod.Policy), tc.rule, r); (err == nil) != tc.ok {
			t.Errorf("%s %v: %v", tc.rule, r, err)
		}
	}
}

// TestInitdata: the annotation holds the KBS, the image signature policy
// and the agent policy, and its digest is the document's.
func TestInitdata(t *testing.T) {
	im := testImages(t)
	imagePolicy := `{"default": [{"type": "reject"}], "transports": {"docker": {"REGISTRY": [{"type": "insecureAcceptAnything"}]}}}`
	pod, _ := deploymentPolicy(t, im, Options{KBSURL: "https://kbs.example:8080", ImagePolicy: []byte(imagePolicy)})
	body, err := decodeAnnotation(pod.Annotation)
	if err != nil || string(body) != pod.Initdata {
		t.Fatalf("annotation: %v", err)
	}
	d, err := initdata.Parse(body)
	if err != nil {
		t.Fatal(err)
	}
	if d.Data[initdata.PolicyRego] != pod.Policy || !strings.Contains(d.Data[initdata.AATOML], "https://kbs.example:8080") ||
		!strings.Contains(d.Data[initdata.CDHTOML], "image_security_policy") {
		t.Errorf("initdata %v", d.Data)
	}
	// The KBS reads the pod's containers back from the claims.
	claims := d.Claims()[initdata.PolicyClaim].(map[string]any)
	if _, ok := claims["containers"].(map[string]any)["app"]; !ok {
		t.Errorf("agent_policy_claims %v", claims)
	}
	for name, opts := range map[string]Options{
		"image policy without KBS": {ImagePolicy: []byte(imagePolicy)},
		"bad KBS URL":              {KBSURL: "kbs.example"},
		"bad image policy":         {KBSURL: "https://kbs", ImagePolicy: []byte(`{"default": 1}`)},
		"unknown format":           {Format: "opa"},
	} {
		m, err := Parse([]byte("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers:\n  - {name: c, image: " + im.host + "/busybox:1}\n"))
		if err != nil {
			t.Fatal(err)
		}
		opts.Resolver = im.resolver
		if _, err := Generate(context.Background(), m, opts); !errors.Is(err, ErrOptions) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// TestContainerDefaults: what the image says when the pod does not
// (entrypoint and cmd, working directory, user), $(VAR) expansion, envFrom
// prefixes, capabilities and privileged containers.
func TestContainerDefaults(t *testing.T) {
	im := testImages(t)
	_, pods := im.generate(t, `apiVersion: v1
kind: Pod
metadata: {name: p, namespace: ns}
spec:
  securityContext: {supplementalGroups: [7, 5]}
  containers:
  - name: image
    image: REGISTRY/app:1
  - name: args
    image: REGISTRY/app:1
    args: ["--port", "$(PORT)", "$$(PORT)", "$(NOPE)"]
    env: [{name: PORT, value: "80"}, {name: URL, value: "http://x:$(PORT)/"}]
    securityContext:
      runAsGroup: 9
      capabilities: {add: [NET_ADMIN], drop: [MKNOD, cap_kill]}
  - name: priv
    image: REGISTRY/busybox:1
    tty: true
    securityContext: {privileged: true}
`, Options{})
	cs := pods[0].Data.Containers
	img, args, priv := cs["image"], cs["args"], cs["priv"]
	if strings.Join(img.Args, " ") != "/app --serve" || img.Cwd != "/srv" || img.User.UID != 1234 || img.User.GID != 5678 ||
		!slices.Equal(img.User.AdditionalGids, []int64{5, 7, 5678}) {
		t.Errorf("image defaults: %+v", img)
	}
	if strings.Join(args.Args, " ") != "/app --port 80 $(PORT) $(NOPE)" || args.User.GID != 9 {
		t.Errorf("args: %q, gid %d", args.Args, args.User.GID)
	}
	if env := envValue(args.Env, "URL"); env != "http://x:80/" {
		t.Errorf("URL=%q", env)
	}
	if !slices.Contains(args.Capabilities, "CAP_NET_ADMIN") || slices.Contains(args.Capabilities, "CAP_MKNOD") || slices.Contains(args.Capabilities, "CAP_KILL") {
		t.Errorf("capabilities %v", args.Capabilities)
	}
	if !priv.Privileged || len(priv.MaskedPaths) != 0 || !slices.Contains(priv.Capabilities, "CAP_SYS_ADMIN") || envValue(priv.Env, "TERM") != "xterm" || !priv.Terminal {
		t.Errorf("privileged: %+v", priv)
	}
}

func envValue(env []EnvVar, name string) string {
	for _, v := range env {
		if v.Name == name {
			return v.Value
		}
	}
	return ""
}

// TestRefusedManifests: what cannot be pinned, or would not run, is an
// error naming why, and nothing is written.
func TestRefusedManifests(t *testing.T) {
	im := testImages(t)
	pod := func(spec string) string {
		return "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n" + spec
	}
	for name, tc := range map[string]struct{ yaml, want string }{
		"missing ConfigMap": {pod("  containers:\n  - name: c\n    image: REGISTRY/busybox:1\n    env: [{name: A, valueFrom: {configMapKeyRef: {name: cm, key: k}}}]\n"), "ConfigMap default/cm key k is not in the manifests"},
		"missing Secret":    {pod("  containers:\n  - name: c\n    image: REGISTRY/busybox:1\n    envFrom: [{secretRef: {name: s}}]\n"), "Secret default/s is not in the manifests"},
		"unknown field":     {pod("  containers:\n  - name: c\n    image: REGISTRY/busybox:1\n    comand: [sh]\n"), `unknown field "spec.containers[0].comand"`},
		"host network":      {pod("  hostNetwork: true\n  containers:\n  - {name: c, image: REGISTRY/busybox:1}\n"), "host namespaces"},
		"user name":         {pod("  containers:\n  - {name: c, image: REGISTRY/named:1}\n"), `user name "nobody"`},
		"no image":          {pod("  containers:\n  - {name: c, image: REGISTRY/none:1}\n"), "cannot resolve image"},
		"pvc": {pod("  containers:\n  - name: c\n    image: REGISTRY/busybox:1\n    volumeMounts: [{name: v, mountPath: /v}]\n  volumes: [{name: v, persistentVolumeClaim: {claimName: x}}]\n"),
			"only configMap, secret"},
		"downward in args": {pod("  containers:\n  - name: c\n    image: REGISTRY/busybox:1\n    args: [\"$(IP)\"]\n    env: [{name: IP, valueFrom: {fieldRef: {fieldPath: status.podIP}}}]\n"), "$(IP) has no value known ahead"},
		"duplicate names":  {pod("  containers:\n  - {name: c, image: REGISTRY/busybox:1}\n  initContainers:\n  - {name: c, image: REGISTRY/busybox:1}\n"), `two containers named "c"`},
		"root but nonroot": {pod("  securityContext: {runAsNonRoot: true}\n  containers:\n  - {name: c, image: REGISTRY/busybox:1}\n"), "runAsNonRoot"},
		"no workload":      {"apiVersion: v1\nkind: Service\nmetadata: {name: s}\n", "no Pod, Deployment"},
		"not YAML":         {"{[", "document 1"},
		"bad name":         {"apiVersion: v1\nkind: Pod\nmetadata: {name: Bad_Name}\nspec: {containers: []}\n", "not a DNS subdomain"},
	} {
		t.Run(name, func(t *testing.T) {
			m, err := Parse([]byte(strings.ReplaceAll(tc.yaml, "REGISTRY", im.host)))
			if err == nil {
				_, err = Generate(context.Background(), m, Options{Resolver: im.resolver})
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want %q", err, tc.want)
			}
			if !errors.Is(err, ErrManifest) && !errors.Is(err, ErrImage) {
				t.Errorf("untyped error %v", err)
			}
		})
	}
}

// FuzzParse: any input parses or is refused with ErrManifest, never
// panics, and what parses writes back to something that parses again.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: c, image: x}]}\n",
		"apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\nspec: {template: {metadata: null, spec: {containers: []}}}\n---\n",
		"apiVersion: v1\nkind: Secret\nmetadata: {name: s}\ndata: {k: aGk=}\nstringData: {a: b}\n",
		"a: &a [*a]\n", "--- !!binary AAAA\n", "{}", "[]",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := Parse(b)
		if err != nil {
			if !errors.Is(err, ErrManifest) {
				t.Fatalf("untyped error %v", err)
			}
			return
		}
		out, err := m.Write()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := Parse(out); err != nil {
			t.Fatalf("written back: %v\n%s", err, out)
		}
	})
}

// FuzzReasons: the reasons of a message join back into it.
func FuzzReasons(f *testing.F) {
	f.Add(`OCI.Process.Args: ["a; b"] is not the policy's ["c"]; OCI.Process.Env: "X" is missing`)
	f.Add(`"\"; "; x`)
	f.Fuzz(func(t *testing.T, msg string) {
		if got := strings.Join(Reasons(msg), "; "); got != msg {
			t.Fatalf("%q joins back to %q", msg, got)
		}
	})
}

// FuzzTOMLString: any text written into initdata reads back as it was.
func FuzzTOMLString(f *testing.F) {
	for _, s := range []string{"package agent_policy\n", "a'", "a''", "'''", "x\r\ny", "\x00", `"\"`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		v, err := tomlString(s)
		if err != nil {
			return // not UTF-8: TOML cannot hold it
		}
		d, err := initdata.Parse([]byte("version = \"0.1.0\"\nalgorithm = \"sha384\"\n[data]\n\"k\" = " + v + "\n"))
		if err != nil || d.Data["k"] != s {
			t.Fatalf("%q: %v, read back %q", s, err, d.Data["k"])
		}
	})
}
