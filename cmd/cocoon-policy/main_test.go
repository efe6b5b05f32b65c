package main

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/cocoon-cc/cocoon/agent/policy/generate"
	"github.com/cocoon-cc/cocoon/image/imagetest"
	"github.com/cocoon-cc/cocoon/internal/testutil"
)

// TestGenerateVerify: generate writes the annotated manifest and the
// policy; verify allows the request a real node made for it and explains,
// one line per field, why a changed one is refused.
func TestGenerateVerify(t *testing.T) {
	reg := imagetest.StartRegistry(t)
	layer := imagetest.GzipLayer(t, imagetest.File("etc/motd", "hello\n", 0o644))
	reg.Push(t, imagetest.New(t, ocispec.ImageConfig{Cmd: []string{"/bin/sh"}, Env: []string{"PATH=/bin"}}, layer), "busybox:1", nil)
	testdata := "../../agent/policy/generate/testdata/"
	dir := t.TempDir()
	manifest, err := os.ReadFile(testdata + "deployment.yaml")
	if err != nil {
		t.Fatal(err)
	}
	// The ConfigMap and Secret in a file of their own.
	docs := strings.SplitN(string(manifest), "---\napiVersion: apps/v1", 2)
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	refs := write("refs.yaml", docs[0])
	in := write("in.yaml", "apiVersion: apps/v1"+strings.ReplaceAll(docs[1], "IMAGE", reg.Host+"/busybox:1"))
	out := filepath.Join(dir, "out.yaml")
	if msg, err := testutil.Execute(newRoot(), "generate", "--insecure", "--references", refs, "-o", out, "--policy-dir", dir, "--kbs-url", "http://10.0.0.1:8080", in); err != nil {
		t.Fatalf("%v: %s", err, msg)
	}
	annotated, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	m, err := generate.Parse(annotated)
	if err != nil {
		t.Fatal(err)
	}
	if len(m.ConfigMaps) != 0 || len(m.Workloads) != 1 || m.Workloads[0].Template.Annotations[generate.InitdataAnnotation] == "" {
		t.Fatalf("output:\n%s", annotated)
	}
	image := m.Workloads[0].Template.Spec.Containers[0].Image
	if _, err := os.Stat(filepath.Join(dir, "deployment-rec.rego")); err != nil {
		t.Error(err)
	}

	request, err := os.ReadFile(testdata + "CreateContainerRequest.json")
	if err != nil {
		t.Fatal(err)
	}
	good := write("CreateContainerRequest.json", strings.ReplaceAll(string(request), "IMAGE", image))
	var r map[string]any
	if err := json.Unmarshal([]byte(strings.ReplaceAll(string(request), "IMAGE", image)), &r); err != nil {
		t.Fatal(err)
	}
	p := r["OCI"].(map[string]any)["Process"].(map[string]any)
	p["Args"] = []any{"/bin/sh", "-c", "cat /etc/sec/password"}
	p["Env"] = append(p["Env"].([]any), "LD_PRELOAD=/tmp/x.so")
	tampered, _ := json.Marshal(r)
	bad := write("tampered.json", string(tampered))

	msg, err := testutil.Execute(newRoot(), "verify", "--policy", out, "--request", good)
	if err != nil || !strings.Contains(msg, "CreateContainerRequest "+good+": allowed") {
		t.Fatalf("the node's request: %v\n%s", err, msg)
	}
	msg, err = testutil.Execute(newRoot(), "verify", "--policy", filepath.Join(dir, "deployment-rec.rego"), "--request", "CreateContainerRequest="+bad)
	if !errors.Is(err, errRefused) {
		t.Fatalf("tampered request: %v\n%s", err, msg)
	}
	lines := strings.Split(strings.TrimSpace(msg), "\n")
	if len(lines) != 2 || !strings.Contains(lines[0], "refused: OCI.Process.Args: [\"/bin/sh\",\"-c\",\"cat /etc/sec/password\"] is not the policy's") ||
		!strings.Contains(lines[1], `refused: OCI.Process.Env: "LD_PRELOAD" is not the policy's`) {
		t.Errorf("verify's explanation:\n%s", msg)
	}
}
