package k8s

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/cocoon-cc/cocoon/agent/policy"
	"github.com/cocoon-cc/cocoon/internal/testutil"
	"github.com/cocoon-cc/cocoon/internal/testutil/k8stest"
)

// story tells what a test does: on standard output when make demo runs it
// (COCOON_DEMO=1), in the test's log otherwise.
func story(t *testing.T, format string, args ...any) {
	t.Helper()
	if os.Getenv("COCOON_DEMO") != "" {
		fmt.Printf("\n\033[1m==> %s\033[0m\n", fmt.Sprintf(format, args...))
		return
	}
	t.Logf(format, args...)
}

// TestCocoonPodSecret is make demo's story through Kubernetes: a KBS holds
// a secret and releases it only to an affirming guest; a cocoon-qemu pod
// applied with kubectl, whose initdata names the KBS, boots its VM, pulls
// its image in the guest, attests and prints the secret its data hub got.
func TestCocoonPodSecret(t *testing.T) {
	story(t, "A one-node Kubernetes %s cluster starts on this machine: etcd, the control plane, a kubelet and\n"+
		"    kube-proxy over a private containerd with the coco runtime classes (deploy/runtimeclasses.yaml)", k8stest.Version)
	c := k8stest.Get(t)
	story(t, "A KBS on %s (the node reaches it there) holds the secret default/key/demo and releases it to affirming\n"+
		"    appraisals only, with reference values registered for the guest's TEE", c.HostIP)
	url := startKBS(t, c, map[string][]byte{"default/key/demo": []byte("the database password is hunter2\n")})

	rego := strings.Replace(policy.Default(), "default ReadStreamRequest := false", "default ReadStreamRequest := true", 1)
	pod := c.CocoPod(t, "secret-demo", testutil.KBSInitdata(url, "", rego),
		`echo "in the pod, on kernel $(cat /proc/sys/kernel/osrelease): the secret is: $(wget -qO- http://127.0.0.1:8006/cdh/resource/default/key/demo)"`)
	story(t, "kubectl apply: a cocoon-qemu pod whose initdata names the KBS and lets the host read its output")
	fmt.Print(indent(pod[:strings.Index(pod, "  annotations")] + "  annotations: {io.katacontainers.config.hypervisor.cc_init_data: ...}\n" + pod[strings.Index(pod, "spec:"):]))
	start := time.Now()
	c.Apply(t, pod)
	defer c.Delete(t, pod)
	c.Kubectl(t, "wait", "--for=jsonpath={.status.phase}=Succeeded", "pod/secret-demo", "--timeout=5m")
	story(t, "The pod ran in %.0f s (VM boot, image pull in the guest, attestation); kubectl logs:", time.Since(start).Seconds())
	logs := c.Kubectl(t, "logs", "secret-demo")
	fmt.Print(indent(logs))
	if !strings.Contains(logs, "the secret is: the database password is hunter2") {
		t.Errorf("the pod did not get the secret: %q", logs)
	}
}

// indent prints text as the demo shows what it runs.
func indent(text string) string {
	if os.Getenv("COCOON_DEMO") == "" {
		return ""
	}
	return "    " + strings.ReplaceAll(strings.TrimSuffix(text, "\n"), "\n", "\n    ") + "\n"
}
