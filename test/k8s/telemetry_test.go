package k8s

import (
	"fmt"
	"net"
	"path/filepath"
	"slices"
	"testing"

	"github.com/cocoon-cc/cocoon/agent/policy"
	"github.com/cocoon-cc/cocoon/internal/testutil"
	"github.com/cocoon-cc/cocoon/internal/testutil/k8stest"
	"github.com/cocoon-cc/cocoon/internal/testutil/kbstest"
	"github.com/cocoon-cc/cocoon/internal/testutil/otelcoltest"
	"github.com/cocoon-cc/cocoon/runtime/shim"
)

// TestKubectlLogsTelemetry: a cocoon-qemu pod under the default policy
// whose initdata ships its output to its owner (telemetry.toml, with an
// SVID from the KBS): kubectl logs names the owner's endpoint, the real
// OpenTelemetry Collector's OTLP receiver there got the lines.
func TestKubectlLogsTelemetry(t *testing.T) {
	c := k8stest.Get(t)
	k := runKBS(t, c, "[spiffe]\ntrust_domain = \"k8s.example\"\n", nil, nil)
	pol := filepath.Join(t.TempDir(), "spiffe.rego")
	testutil.WriteFile(t, pol, []byte("package policy\nimport rego.v1\ndefault allow := false\nallow if data.path == \"/ns/default/telemetry\"\n"))
	if out, err := k.admin("set-spiffe-policy", "--policy-file", pol); err != nil {
		t.Fatalf("set-spiffe-policy: %v %s", err, out)
	}
	owner := otelcoltest.Start(t, net.ParseIP(c.HostIP), kbstest.BundleCA(t, k.url, "k8s.example"))
	initdata := testutil.KBSInitdata(k.url, "", policy.Default()) + "\"spiffe.toml\" = 'id = \"/ns/default/telemetry\"'\n" +
		fmt.Sprintf("\"telemetry.toml\" = '''\nendpoint = %q\nca = \"\"\"\n%s\"\"\"\n'''\n", owner.Endpoint, owner.CA)
	pod := c.CocoPod(t, "telemetry", initdata, "echo for the owner only; echo on stderr too >&2")
	c.Apply(t, pod)
	defer c.Delete(t, pod)
	c.Kubectl(t, "wait", "--for=jsonpath={.status.phase}=Succeeded", "pod/telemetry", "--timeout=5m")
	if logs, want := c.Kubectl(t, "logs", "telemetry"), fmt.Sprintf(shim.ShippedNotice, owner.Endpoint); logs != want {
		t.Errorf("kubectl logs: %q, want %q", logs, want)
	}
	c.Eventually(t, "the owner's lines", func() bool {
		got := owner.Received(t).LogBodies()
		return slices.Contains(got, "for the owner only") && slices.Contains(got, "on stderr too")
	})
}
