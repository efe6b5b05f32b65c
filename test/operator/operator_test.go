// Package operator tests cocoon-operator on a real Kubernetes node whose
// containerd starts without Cocoon (k8stest's Bare cluster): the operator
// installed from deploy/operator, its node installer adding Cocoon to
// containerd, Cocoon pods through the RuntimeClasses it makes, upgrades
// and removal.
package operator

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/cocoon-cc/cocoon/internal/testutil"
	"github.com/cocoon-cc/cocoon/internal/testutil/k8stest"
	"github.com/cocoon-cc/cocoon/operator/images"
)

func TestMain(m *testing.M) { os.Exit(k8stest.MainWith(m, k8stest.Options{Bare: true})) }

var (
	pushOnce sync.Once
	pushed   map[string]string
)

// pushImages builds the operator's, the installer's and two guest images
// (make images' code) and pushes them to the cluster's registry with
// skopeo; it returns their references by digest.
func pushImages(t testing.TB, c *k8stest.Cluster) map[string]string {
	t.Helper()
	pushOnce.Do(func() {
		kernel, initrd := testutil.Guest(t)
		guest := map[string]string{"vmlinuz": kernel, "initramfs.cpio.gz": initrd}
		imgs := []images.Image{
			mustFind(t, "cocoon-operator"),
			mustFind(t, "cocoon-node-installer"),
			{Name: "guest-a", Files: guest, Labels: map[string]string{"org.opencontainers.image.version": "a"}},
			{Name: "guest-b", Files: guest, Labels: map[string]string{"org.opencontainers.image.version": "b"}},
			mustFind(t, "kbs"),
			{Name: "guest-snp", Files: map[string]string{"vmlinuz": kernel, "initramfs.cpio.gz": initrd, "OVMF.amdsev.fd": snpFirmware(t)}},
		}
		out := t.TempDir()
		refs := map[string]string{}
		for _, img := range imgs {
			d, err := images.Build(context.Background(), testutil.RepoRoot(t), out, img)
			if err != nil {
				t.Fatal(err)
			}
			ref := c.Registry + "/cocoon/" + img.Name
			if b, err := exec.Command("skopeo", "copy", "--dest-tls-verify=false", "oci:"+filepath.Join(out, img.Name)+":latest",
				"docker://"+ref+":latest").CombinedOutput(); err != nil {
				t.Fatalf("skopeo copy %s: %v\n%s", img.Name, err, b)
			}
			refs[img.Name] = ref + "@" + d.String()
		}
		pushed = refs
	})
	if pushed == nil {
		t.Fatal("the images were not pushed")
	}
	return pushed
}

func mustFind(t testing.TB, name string) images.Image {
	img, err := images.Find(name)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

var operatorOnce sync.Once

// installOperator applies deploy/operator (CRDs, RBAC, the Deployment with
// the pushed images) and waits for the operator to be available.
func installOperator(t testing.TB, c *k8stest.Cluster) {
	t.Helper()
	refs := pushImages(t, c)
	operatorOnce.Do(func() {
		root := testutil.RepoRoot(t)
		for _, f := range []string{"deploy/operator/crd/cocoon.io_cocoonruntimes.yaml", "deploy/operator/crd/cocoon.io_keybrokers.yaml",
			"deploy/operator/rbac/role.yaml"} {
			b, err := os.ReadFile(filepath.Join(root, f))
			if err != nil {
				t.Fatal(err)
			}
			c.Apply(t, string(b))
		}
		b, err := os.ReadFile(filepath.Join(root, "deploy/operator/operator.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		manifest := strings.NewReplacer("cocoon/cocoon-operator:latest", refs["cocoon-operator"],
			"cocoon/cocoon-node-installer:latest", refs["cocoon-node-installer"], "cocoon/kbs:latest", refs["kbs"]).Replace(string(b))
		c.Apply(t, manifest)
		if _, err := c.TryKubectl("", "-n", "cocoon-system", "wait", "--for=condition=Available", "deployment/cocoon-operator", "--timeout=3m"); err != nil {
			desc, _ := c.TryKubectl("", "-n", "cocoon-system", "describe", "pods")
			logs, _ := c.TryKubectl("", "-n", "cocoon-system", "logs", "deployment/cocoon-operator")
			t.Fatalf("%v\n%s\n%s", err, desc, logs)
		}
	})
}
