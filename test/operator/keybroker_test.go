package operator

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/cocoon-cc/cocoon/agent/policy"
	"github.com/cocoon-cc/cocoon/internal/testutil"
	"github.com/cocoon-cc/cocoon/internal/testutil/dbtest"
	"github.com/cocoon-cc/cocoon/internal/testutil/k8stest"
	"github.com/cocoon-cc/cocoon/kbs/respolicy"
	"github.com/cocoon-cc/cocoon/runtime/measure/ovmf/ovmftest"
)

// snpFirmware writes a synthetic OvmfPkg/AmdSev firmware (its measured
// direct boot has a kernel-hashes page) for the qemu-snp flavour's guest.
func snpFirmware(t testing.TB) string {
	p := filepath.Join(t.TempDir(), "OVMF.amdsev.fd")
	if err := os.WriteFile(p, ovmftest.AmdSev(), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// sampleReferenceValues are what the sample TEE's evidence (the attester
// of a cocoon-qemu VM without a TEE) appraises affirming against.
const sampleReferenceValues = `
  referenceValues:
  - {name: svn, value: ["1"]}
  - {name: launch_digest, value: ["abcde"]}
  - {name: major_version, value: 1}
  - {name: minimum_minor_version, value: 1}
  resources: {matchLabels: {cocoon.io/kbs: demo}}
  resourcePolicy: {name: kbs-policy, key: policy.rego}
`

// keyBrokerObjects are the Kubernetes objects a KeyBroker selects: the
// secret (only here), a Secret placed by its annotations, the resource
// policy and the database's password.
func keyBrokerObjects(secret, password string) string {
	return fmt.Sprintf(`apiVersion: v1
kind: Secret
metadata:
  name: demo
  namespace: default
  labels: {cocoon.io/kbs: demo}
stringData: {password: %q}
---
apiVersion: v1
kind: Secret
metadata:
  name: team-db
  namespace: default
  labels: {cocoon.io/kbs: demo}
  annotations: {cocoon.io/kbs-repository: team-a, cocoon.io/kbs-type: db}
stringData: {token: "team token"}
---
apiVersion: v1
kind: Secret
metadata: {name: pg, namespace: default}
stringData: {password: %q}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: kbs-policy, namespace: default}
data:
  policy.rego: %q
`, secret, password, respolicy.Affirming)
}

// postgresKeyBroker is KeyBroker kbs on database db of pg, its password
// in Secret pg (keyBrokerObjects), selecting the demo Secret.
func postgresKeyBroker(pg *dbtest.Postgres, db string, replicas int) string {
	return fmt.Sprintf(`apiVersion: cocoon.io/v1alpha1
kind: KeyBroker
metadata: {name: kbs, namespace: default}
spec:
  replicas: %d
  storage:
    postgres: {host: %q, port: %d, db: %s, username: %s, passwordSecret: {name: pg, key: password}}
%s`, replicas, pg.Host, pg.Port, db, pg.User, sampleReferenceValues)
}

// kbGet is a jsonpath of KeyBroker name.
func kbGet(c *k8stest.Cluster, name, path string) string {
	out, _ := c.TryKubectl("", "get", "keybroker", name, "-o", "jsonpath="+path)
	return out
}

// waitKB waits until a jsonpath of the KeyBroker is want.
func waitKB(t testing.TB, c *k8stest.Cluster, name, path, want string) {
	t.Helper()
	for deadline := time.Now().Add(4 * time.Minute); kbGet(c, name, path) != want; time.Sleep(time.Second) {
		if time.Now().After(deadline) {
			y, _ := c.TryKubectl("", "get", "keybroker", name, "-o", "yaml")
			pods, _ := c.TryKubectl("", "describe", "pods", "-l", "app.kubernetes.io/instance="+name)
			logs, _ := c.TryKubectl("", "-n", "cocoon-system", "logs", "deployment/cocoon-operator", "--tail=30")
			t.Fatalf("KeyBroker %s: %s is %q, want %q\n%s\n%s\n%s", name, path, kbGet(c, name, path), want, y, pods, logs)
		}
	}
}

// kbsClient runs kbs-client against KeyBroker name's Service (routed to
// the node from the host), trusting its TLS Secret's CA (the generated
// one's, or the Secret its spec names).
func kbsClient(t *testing.T, c *k8stest.Cluster, name string, args ...string) (string, error) {
	ca := filepath.Join(t.TempDir(), "ca.crt")
	secret := kbGet(c, name, "{.spec.tls.secretName}")
	if secret == "" {
		secret = name + "-tls"
	}
	b64 := c.Kubectl(t, "get", "secret", secret, "-o", `jsonpath={.data.ca\.crt}`)
	pem, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(ca, pem, 0o600); err != nil {
		t.Fatal(err)
	}
	ip := c.Kubectl(t, "get", "service", name, "-o", "jsonpath={.spec.clusterIP}")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, testutil.Bin(t, "kbs-client"), append([]string{"--url", "https://" + ip + ":8080",
		"--cert-file", ca}, args...)...).CombinedOutput()
	return string(out), err
}

// fetch attests with the sample attester and returns a resource's value.
func fetch(t *testing.T, c *k8stest.Cluster, name, path string) string {
	t.Helper()
	out, err := kbsClient(t, c, name, "get-resource", "--path", path)
	if err != nil {
		t.Fatalf("kbs-client get-resource %s: %v\n%s", path, err, out)
	}
	v, err := base64.StdEncoding.DecodeString(strings.TrimSpace(out))
	if err != nil {
		t.Fatalf("get-resource: %q: %v", out, err)
	}
	return string(v)
}

// TestKeyBroker: a KeyBroker on PostgreSQL (Debian's, started by the test
// on the host's address as the node sees it) serves a secret that exists
// only as a Kubernetes Secret to a cocoon-qemu pod, which attests against
// reference values the operator registered, with the launch measurement of
// the CocoonRuntime's qemu-snp guest among them (cocoon-measure's); a
// changed Secret changes the resource; a bad spec is a condition; a
// KeyBroker on the embedded store (a local PV) serves too; deleting a
// KeyBroker removes what it made.
func TestKeyBroker(t *testing.T) {
	c := k8stest.Get(t)
	installOperator(t, c)
	refs := pushImages(t, c)
	pg := dbtest.StartPostgresOn(t, c.HostIP)
	pg.CreateDB(t, "kbs")

	c.Apply(t, cocoonRuntime(c, refs["guest-snp"], "qemu", "qemu-snp"))
	defer func() {
		if _, err := c.TryKubectl("", "delete", "cocoonruntime", "node", "--timeout=4m"); err != nil {
			t.Errorf("delete the CocoonRuntime: %v", err)
		}
	}()
	c.Apply(t, keyBrokerObjects("the database password is hunter2", pg.Password))
	defer c.TryKubectl("", "delete", "secret/demo", "secret/team-db", "secret/pg", "configmap/kbs-policy", "--ignore-not-found")
	c.Apply(t, postgresKeyBroker(pg, "kbs", 2)+"  runtimeRef: {name: node, vcpus: [1, 2]}\n")
	defer c.TryKubectl("", "delete", "keybroker", "kbs", "--timeout=2m")
	waitRuntimeReady(t, c, refs["guest-snp"])
	waitKB(t, c, "kbs", `{.status.conditions[?(@.type=="Ready")].status}`, "True")
	waitKB(t, c, "kbs", "{.status.readyReplicas} {.status.url}", "2 https://kbs.default.svc:8080")
	if out := c.Kubectl(t, "get", "kb", "kbs"); !strings.Contains(out, "READY") || !regexp.MustCompile(`kbs +True +2 +https://kbs.default.svc:8080 `).MatchString(out) {
		t.Errorf("kubectl get kb:\n%s", out)
	}

	// The launch measurement registered is cocoon-measure's for the guest's
	// files and the shim's command line.
	kernel, initrd := testutil.Guest(t)
	want, err := exec.Command(testutil.Bin(t, "cocoon-measure"), "snp", "--ovmf", snpFirmware(t), "--kernel", kernel,
		"--initrd", initrd, "--append", "console=ttyS0 panic=-1 quiet cocoon.channel=serial", "--vcpus", "1,2",
		"--vcpu-type", "EPYC-v4").Output()
	if err != nil {
		t.Fatal(err)
	}
	digest := refs["guest-snp"][strings.Index(refs["guest-snp"], "@")+1:]
	if got := kbGet(c, "kbs", `{.status.measurements[0].flavour} {.status.measurements[0].name} {.status.measurements[0].guest} {.status.measurements[0].values[*]}`); got != "qemu-snp snp_launch_measurement "+digest+" "+strings.Join(strings.Fields(string(want)), " ") {
		t.Errorf("measurements: %q, want cocoon-measure's %q", got, want)
	}
	admin := filepath.Join(t.TempDir(), "admin.key")
	key, _ := base64.StdEncoding.DecodeString(c.Kubectl(t, "get", "secret", "kbs-admin", "-o", `jsonpath={.data.private\.key}`))
	if err := os.WriteFile(admin, key, 0o600); err != nil {
		t.Fatal(err)
	}
	rv, err := kbsClient(t, c, "kbs", "config", "--auth-private-key", admin, "--issuer", "cocoon-operator", "get-reference-value", "--id", "snp_launch_measurement")
	if err != nil || !strings.Contains(rv, strings.Fields(string(want))[1]) {
		t.Errorf("the KBS's snp_launch_measurement: %v %s", err, rv)
	}

	// No value in the status: the resource is listed with a keyed hash.
	status := c.Kubectl(t, "get", "keybroker", "kbs", "-o", "json")
	if strings.Contains(status, "hunter2") || !strings.Contains(status, `"default/demo/password"`) {
		t.Errorf("status resources: %s", status)
	}

	// A cocoon-qemu pod whose initdata names the KBS (its Service address,
	// its certificate) attests and gets the secret.
	caPEM, _ := base64.StdEncoding.DecodeString(c.Kubectl(t, "get", "secret", "kbs-tls", "-o", `jsonpath={.data.ca\.crt}`))
	url := "https://" + c.Kubectl(t, "get", "service", "kbs", "-o", "jsonpath={.spec.clusterIP}") + ":8080"
	pod := c.CocoPod(t, "kb-secret", testutil.KBSInitdata(url, string(caPEM), allowLogsPolicy()),
		`echo "the secret is: $(wget -qO- http://127.0.0.1:8006/cdh/resource/default/demo/password)"`)
	c.Apply(t, pod)
	if _, err := c.TryKubectl("", "wait", "--for=jsonpath={.status.phase}=Succeeded", "pod/kb-secret", "--timeout=5m"); err != nil {
		desc, _ := c.TryKubectl("", "describe", "pod", "kb-secret")
		t.Fatalf("%v\n%s", err, desc)
	}
	if logs := c.Kubectl(t, "logs", "kb-secret"); !strings.Contains(logs, "the secret is: the database password is hunter2") {
		t.Errorf("the pod did not get the secret: %q", logs)
	}
	c.Delete(t, pod)

	// A changed Secret changes the resource.
	hash := kbGet(c, "kbs", "{.status.resources[0].hash}")
	c.Apply(t, keyBrokerObjects("rotated", pg.Password))
	c.Eventually(t, "the resource's new hash", func() bool { return kbGet(c, "kbs", "{.status.resources[0].hash}") != hash })
	if got := fetch(t, c, "kbs", "default/demo/password"); got != "rotated" {
		t.Errorf("after the Secret changed the KBS serves %q", got)
	}

	// A Secret's annotations place its keys; a Secret deleted is deleted
	// from the KBS.
	if got := fetch(t, c, "kbs", "team-a/db/token"); got != "team token" {
		t.Errorf("team-a/db/token: %q", got)
	}
	c.Kubectl(t, "delete", "secret", "team-db")
	waitKB(t, c, "kbs", "{.status.resources[*].name}", "default/demo/password")
	if out, err := kbsClient(t, c, "kbs", "get-resource", "--path", "team-a/db/token"); err == nil {
		t.Errorf("a deleted Secret's resource is still served: %s", out)
	}

	// A bad spec: a ConfigMap key that does not exist, then a policy the
	// KBS refuses; the condition says which.
	c.Kubectl(t, "patch", "keybroker", "kbs", "--type=merge", "-p", `{"spec":{"resourcePolicy":{"key":"missing.rego"}}}`)
	waitKB(t, c, "kbs", `{.status.conditions[?(@.type=="Ready")].reason}`, "InvalidSpec")
	if msg := kbGet(c, "kbs", `{.status.conditions[?(@.type=="Ready")].message}`); msg != `resourcePolicy: ConfigMap kbs-policy has no key "missing.rego"` {
		t.Errorf("condition: %q", msg)
	}
	c.Kubectl(t, "patch", "configmap", "kbs-policy", "--type=merge", "-p", `{"data":{"bad.rego":"package policy\nallow if {"}}`)
	c.Kubectl(t, "patch", "keybroker", "kbs", "--type=merge", "-p", `{"spec":{"resourcePolicy":{"key":"bad.rego"}}}`)
	waitKB(t, c, "kbs", `{.status.conditions[?(@.type=="Ready")].reason}`, "KBSRefused")
	if msg := kbGet(c, "kbs", `{.status.conditions[?(@.type=="Ready")].message}`); !strings.HasPrefix(msg, "policy resource-policy: ") {
		t.Errorf("condition: %q", msg)
	}
	c.Kubectl(t, "patch", "keybroker", "kbs", "--type=merge", "-p", `{"spec":{"resourcePolicy":{"key":"policy.rego"}}}`)
	waitKB(t, c, "kbs", `{.status.conditions[?(@.type=="Ready")].status}`, "True")
	// Two stores, or replicas of the embedded one, are refused.
	if out, err := c.TryKubectl("", "patch", "keybroker", "kbs", "--type=merge", "-p", `{"spec":{"storage":{"embedded":{}}}}`); err == nil ||
		!strings.Contains(out, "give exactly one of postgres or embedded") {
		t.Errorf("a KeyBroker with two stores: %v %s", err, out)
	}

	t.Run("embedded", func(t *testing.T) { testEmbeddedKeyBroker(t, c) })

	// Scaled to zero, the KeyBroker says so.
	c.Kubectl(t, "patch", "keybroker", "kbs", "--type=merge", "-p", `{"spec":{"replicas":0}}`)
	waitKB(t, c, "kbs", `{.status.conditions[?(@.type=="Ready")].reason} {.status.readyReplicas}`, "ScaledDown 0")

	// Deleting the KeyBroker removes what it made.
	c.Kubectl(t, "delete", "keybroker", "kbs", "--timeout=2m")
	c.Eventually(t, "the KBS's objects gone", func() bool {
		out, _ := c.TryKubectl("", "get", "deployment,service,configmap,secret", "-l", "app.kubernetes.io/instance=kbs", "-o", "name")
		return strings.TrimSpace(out) == ""
	})
}

// testEmbeddedKeyBroker: a KeyBroker on its own store, a PVC bound to a
// local PersistentVolume on the node, serves the selected Secret.
func testEmbeddedKeyBroker(t *testing.T, c *k8stest.Cluster) {
	dir := localPV(t, c, "kbs-local", "local-test")
	c.Apply(t, fmt.Sprintf(`apiVersion: cocoon.io/v1alpha1
kind: KeyBroker
metadata: {name: kbs-embedded, namespace: default}
spec:
  storage:
    embedded: {size: 1Gi, storageClassName: local-test}
%s`, sampleReferenceValues))
	defer c.TryKubectl("", "delete", "keybroker", "kbs-embedded", "--timeout=2m")
	waitKB(t, c, "kbs-embedded", `{.status.conditions[?(@.type=="Ready")].status}`, "True")
	if got := fetch(t, c, "kbs-embedded", "default/demo/password"); got != "rotated" {
		t.Errorf("the embedded KBS serves %q", got)
	}
	if entries, _ := os.ReadDir(dir); len(entries) == 0 {
		t.Error("the KBS wrote nothing on its volume")
	}
	testUserKeys(t, c, "kbs-embedded")
}

// testUserKeys: KeyBroker name switched to the user's own TLS Secret (a
// CA's certificate for its Service, as cert-manager issues) and admin key:
// the KBS serves that certificate and takes that key, and the generated
// key no longer administers it.
func testUserKeys(t *testing.T, c *k8stest.Cluster, name string) {
	generated := filepath.Join(t.TempDir(), "generated.key")
	key, _ := base64.StdEncoding.DecodeString(c.Kubectl(t, "get", "secret", name+"-admin", "-o", `jsonpath={.data.private\.key}`))
	if err := os.WriteFile(generated, key, 0o600); err != nil {
		t.Fatal(err)
	}
	ip := net.ParseIP(c.Kubectl(t, "get", "service", name, "-o", "jsonpath={.spec.clusterIP}"))
	ca, cert, tlsKey := testutil.ServerPKI(t, []net.IP{ip}, name+".default.svc")
	admin, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(admin)
	if err != nil {
		t.Fatal(err)
	}
	adminPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	adminFile := filepath.Join(t.TempDir(), "admin.key")
	if err := os.WriteFile(adminFile, adminPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	b64 := base64.StdEncoding.EncodeToString
	c.Apply(t, fmt.Sprintf(`apiVersion: v1
kind: Secret
metadata: {name: %[1]s-user-tls, namespace: default}
type: kubernetes.io/tls
data: {tls.crt: %[2]s, tls.key: %[3]s, ca.crt: %[4]s}
---
apiVersion: v1
kind: Secret
metadata: {name: %[1]s-user-admin, namespace: default}
data: {private.key: %[5]s}
`, name, b64(cert), b64(tlsKey), b64(ca), b64(adminPEM)))
	defer c.TryKubectl("", "delete", "secret", name+"-user-tls", name+"-user-admin")
	c.Kubectl(t, "patch", "keybroker", name, "--type=merge", "-p",
		fmt.Sprintf(`{"spec":{"tls":{"secretName":"%[1]s-user-tls"},"adminKeySecret":"%[1]s-user-admin"}}`, name))
	getRV := func(keyFile string) (string, error) {
		return kbsClient(t, c, name, "config", "--auth-private-key", keyFile, "--issuer", "cocoon-operator", "get-reference-value", "--id", "svn")
	}
	var out string
	for deadline := time.Now().Add(2 * time.Minute); ; time.Sleep(2 * time.Second) {
		if out, err = getRV(adminFile); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the KBS never took the user's certificate and admin key: %v\n%s", err, out)
		}
	}
	if !strings.Contains(out, "1") {
		t.Errorf("svn through the user's key: %s", out)
	}
	waitKB(t, c, name, `{.status.conditions[?(@.type=="Ready")].status}`, "True")
	if got := fetch(t, c, name, "default/demo/password"); got != "rotated" {
		t.Errorf("under the user's certificate the KBS serves %q", got)
	}
	if out, err := getRV(generated); err == nil {
		t.Errorf("the generated admin key still administers the KBS: %s", out)
	}
}

// localPV makes a 1Gi local PersistentVolume of class on the node, deleted
// when the test ends; its directory on the host.
func localPV(t *testing.T, c *k8stest.Cluster, name, class string) string {
	dir := c.HostDir(name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	c.Apply(t, fmt.Sprintf(`apiVersion: v1
kind: PersistentVolume
metadata: {name: %s}
spec:
  capacity: {storage: 1Gi}
  accessModes: [ReadWriteOnce]
  persistentVolumeReclaimPolicy: Retain
  storageClassName: %s
  local: {path: %q}
  nodeAffinity:
    required:
      nodeSelectorTerms:
      - matchExpressions:
        - {key: kubernetes.io/hostname, operator: In, values: [%s]}
`, name, class, dir, k8stest.NodeName))
	t.Cleanup(func() { c.TryKubectl("", "delete", "pv", name, "--wait=false") })
	return dir
}

// allowLogsPolicy is the default agent policy letting the host read the
// container's output.
func allowLogsPolicy() string {
	return strings.Replace(policy.Default(), "default ReadStreamRequest := false", "default ReadStreamRequest := true", 1)
}
