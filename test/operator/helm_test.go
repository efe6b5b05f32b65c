package operator

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cocoon-cc/cocoon/internal/testutil"
	"github.com/cocoon-cc/cocoon/internal/testutil/k8stest"
)

// helmVersion is the helm scripts/build-helm.sh builds.
const helmVersion = "v3.22.0"

// helmBin builds helm from the Go module proxy once (cached outside the
// repository, as the Kubernetes binaries are).
func helmBin(t testing.TB) string {
	t.Helper()
	dir := testutil.ToolDir("COCOON_HELM_BIN", "helm", helmVersion)
	cmd := exec.Command("bash", "scripts/build-helm.sh")
	cmd.Dir = testutil.RepoRoot(t)
	cmd.Env = append(os.Environ(), "COCOON_HELM_BIN="+dir, "HELM_VERSION="+helmVersion)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("scripts/build-helm.sh: %v\n%s", err, out)
	}
	return filepath.Join(dir, "helm")
}

func helm(t testing.TB, c *k8stest.Cluster, args ...string) string {
	t.Helper()
	out, err := tryHelm(t, c, args...)
	if err != nil {
		t.Fatalf("helm %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

func tryHelm(t testing.TB, c *k8stest.Cluster, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, helmBin(t), append([]string{"--kubeconfig", c.Kubeconfig}, args...)...)
	cmd.Env = append(os.Environ(), "HELM_CACHE_HOME="+t.TempDir(), "HELM_CONFIG_HOME="+t.TempDir(), "HELM_DATA_HOME="+t.TempDir())
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// TestHelmChart: deploy/helm/cocoon lints, installs the operator (with
// its CRDs) that then installs Cocoon on the node, and a KeyBroker on a
// local volume that gets Ready, and uninstalls both. It runs before
// TestCocoonRuntime (file order), which installs the operator from
// deploy/operator: one operator at a time.
func TestHelmChart(t *testing.T) {
	c := k8stest.Get(t)
	refs := pushImages(t, c)
	chart := filepath.Join(testutil.RepoRoot(t), "deploy/helm/cocoon")
	helm(t, c, "lint", "--strict", chart)
	if out, err := tryHelm(t, c, "template", chart, "--set", "keyBroker.enabled=true"); err == nil ||
		!strings.Contains(out, "keyBroker.spec.storage is required") {
		t.Errorf("a KeyBroker without storage rendered: %v\n%s", err, out)
	}
	localPV(t, c, "kbs-helm", "helm-local")
	values := filepath.Join(t.TempDir(), "values.yaml")
	if err := os.WriteFile(values, []byte("keyBroker:\n  enabled: true\n  spec:\n    storage:\n      embedded: {size: 1Gi, storageClassName: helm-local}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	helm(t, c, "install", "cocoon", chart, "--namespace", "cocoon-helm", "--create-namespace", "--wait", "--timeout", "3m", "-f", values,
		"--set", "operator.image="+refs["cocoon-operator"], "--set", "installer.image="+refs["cocoon-node-installer"], "--set", "kbs.image="+refs["kbs"])
	uninstalled := false
	defer func() {
		if !uninstalled {
			c.TryKubectl("", "delete", "cocoonruntime", "--all", "--timeout=4m")
			helm(t, c, "uninstall", "cocoon", "--namespace", "cocoon-helm", "--wait")
		}
	}()
	c.Apply(t, cocoonRuntime(c, refs["guest-a"], "qemu"))
	waitRuntimeReady(t, c, refs["guest-a"])
	if out := c.Kubectl(t, "get", "daemonset", "-n", "cocoon-helm", "-o", "name"); !strings.Contains(out, "cocoon-install-node") {
		t.Errorf("no installer DaemonSet in the release's namespace: %q", out)
	}
	c.Eventually(t, "the release's KeyBroker Ready", func() bool {
		out, _ := c.TryKubectl("", "-n", "cocoon-helm", "get", "keybroker", "kbs", "-o", `jsonpath={.status.conditions[?(@.type=="Ready")].status}`)
		return out == "True"
	})
	if _, err := c.TryKubectl("", "delete", "cocoonruntime", "node", "--timeout=4m"); err != nil {
		t.Fatal(err)
	}
	helm(t, c, "uninstall", "cocoon", "--namespace", "cocoon-helm", "--wait")
	uninstalled = true
	if out, _ := c.TryKubectl("", "get", "deployment", "-A", "-l", "app.kubernetes.io/part-of=cocoon", "-o", "name"); strings.TrimSpace(out) != "" {
		t.Errorf("left after helm uninstall: %s", out)
	}
	c.Eventually(t, "the KeyBroker's objects gone", func() bool {
		out, _ := c.TryKubectl("", "-n", "cocoon-helm", "get", "keybroker,deployment,service,pvc", "-o", "name")
		return strings.TrimSpace(out) == ""
	})
	c.Kubectl(t, "delete", "namespace", "cocoon-helm", "--wait", "--timeout=2m")
}
