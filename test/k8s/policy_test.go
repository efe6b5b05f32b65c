package k8s

import (
	"context"
	"strings"
	"testing"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/cocoon-cc/cocoon/agent/policy/generate"
	"github.com/cocoon-cc/cocoon/image/imagetest"
	"github.com/cocoon-cc/cocoon/internal/testutil/k8stest"
)

// TestGeneratedPolicy: cocoon-policy's policy for a Deployment with exec
// probes, ConfigMap env and volumes lets its pod run and become Ready (the
// probes run in the guest) while kubectl exec stays refused; the same
// annotation on a changed command is refused at CreateContainer, naming
// the field in the pod's status and kubectl describe.
func TestGeneratedPolicy(t *testing.T) {
	c := k8stest.Get(t)
	// An image of its own (a label makes its config, the image id, differ
	// from busybox:1's): containerd names a pod's image by a tag when any
	// reference of the same image has one.
	img := imagetest.New(t, ocispec.ImageConfig{Cmd: []string{"/bin/sh"}, Env: []string{"PATH=/bin"},
		Labels: map[string]string{"cocoon.test": "policy"}}, imagetest.BusyboxLayer(t))
	image := c.PushImage(t, img, "policy/busybox:1")
	manifests := `apiVersion: v1
kind: ConfigMap
metadata: {name: pol-cfg, namespace: default}
data: {greeting: hello, app.conf: "level=1"}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: pol, namespace: default}
spec:
  replicas: 1
  selector: {matchLabels: {app: pol}}
  template:
    metadata:
      labels: {app: pol}
    spec:
      runtimeClassName: cocoon-qemu
      terminationGracePeriodSeconds: 1
      containers:
      - name: app
        image: ` + image + `
        command: ["/bin/sh", "-c", "echo $(GREETING) > /tmp/greeting; exec sleep 1000"]
        env:
        - {name: GREETING, valueFrom: {configMapKeyRef: {name: pol-cfg, key: greeting}}}
        volumeMounts:
        - {name: cfg, mountPath: /etc/cfg}
        - {name: scratch, mountPath: /scratch}
        readinessProbe:
          exec: {command: ["/bin/sh", "-c", "test \"$(cat /tmp/greeting)\" = hello && test -f /etc/cfg/app.conf && touch /scratch/ok"]}
          periodSeconds: 2
          timeoutSeconds: 10
        livenessProbe:
          exec: {command: ["cat", "/etc/cfg/app.conf"]}
          periodSeconds: 5
          timeoutSeconds: 10
      volumes:
      - {name: cfg, configMap: {name: pol-cfg}}
      - {name: scratch, emptyDir: {}}
`
	m, err := generate.Parse([]byte(manifests))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := generate.Generate(ctx, m, generate.Options{Resolver: &generate.Registry{Insecure: true}}); err != nil {
		t.Fatal(err)
	}
	out, err := m.Write()
	if err != nil {
		t.Fatal(err)
	}
	annotated := string(out)
	c.Apply(t, annotated)
	defer c.Delete(t, annotated)
	pods := c.WaitSelector(t, "default", "app=pol")
	if len(pods) != 1 {
		t.Fatalf("pods %v", pods)
	}
	if restarts := c.Kubectl(t, "get", "pod", pods[0], "-o", "jsonpath={.status.containerStatuses[0].restartCount}"); restarts != "0" {
		t.Errorf("the liveness probe restarted the container %s times", restarts)
	}
	if out, err := c.TryKubectl("", "exec", pods[0], "--", "cat", "/tmp/greeting"); err == nil || !strings.Contains(out, "ExecProcessRequest") {
		t.Errorf("kubectl exec of a command that is no probe's: %v %s", err, out)
	}

	// The host runs another command under the same annotation: a new
	// ReplicaSet's pod, refused at CreateContainer.
	tampered := strings.Replace(annotated, "exec sleep 1000", "cat /etc/cfg/app.conf; exec sleep 1000", 1)
	if tampered == annotated {
		t.Fatal("nothing to tamper with")
	}
	c.Apply(t, tampered)
	var pod, msg string
	for deadline := time.Now().Add(3 * time.Minute); pod == ""; time.Sleep(2 * time.Second) {
		out, _ := c.TryKubectl("", "get", "pods", "-l", "app=pol", "-o",
			`jsonpath={range .items[*]}{.metadata.name} {.status.containerStatuses[0].state.waiting.message}{.status.containerStatuses[0].lastState.terminated.message}{"\n"}{end}`)
		for _, line := range strings.Split(out, "\n") {
			if name, why, _ := strings.Cut(line, " "); name != pods[0] && strings.Contains(why, "denied by the agent policy") {
				pod, msg = name, why
			}
		}
		if pod == "" && time.Now().After(deadline) {
			desc, _ := c.TryKubectl("", "describe", "pods", "-l", "app=pol")
			t.Fatalf("the tampered pod was not refused:\n%s\n%s", out, desc)
		}
	}
	// The refusal shows the command as JSON (OPA escapes ">").
	if !strings.Contains(msg, `OCI.Process.Args: ["/bin/sh","-c","echo hello \u003e /tmp/greeting; cat /etc/cfg/app.conf; exec sleep 1000"] is not the policy's`) {
		t.Errorf("the refusal does not name the command: %s", msg)
	}
	c.Eventually(t, "the refusal in kubectl describe", func() bool {
		out, _ := c.TryKubectl("", "describe", "pod", pod)
		return strings.Contains(out, "OCI.Process.Args")
	})
	// The pod of the policy's command runs on.
	c.WaitReady(t, "default", pods[0])
}
