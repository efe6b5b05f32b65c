package generate

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/cocoon-cc/cocoon/agent/policy"
	"github.com/cocoon-cc/cocoon/image/imagetest"
)

// BenchmarkGenerate: cocoon-policy generate for a Deployment of 50
// containers (5 images; ConfigMap and Secret env, volumes, exec probes):
// "resolve" asks the registry (a local docker-registry) for each image
// anew, "cached" has the digests already, which leaves the generation
// itself (policy data, policy text, initdata, gzip, YAML).
func BenchmarkGenerate(b *testing.B) {
	reg := imagetest.StartRegistry(b)
	layer := imagetest.GzipLayer(b, imagetest.File("etc/motd", "hello\n", 0o644))
	for i := range 5 {
		reg.Push(b, imagetest.New(b, ocispec.ImageConfig{Cmd: []string{"/bin/sh"}, Env: []string{"PATH=/bin", fmt.Sprintf("N=%d", i)}}, layer),
			fmt.Sprintf("img%d:1", i), nil)
	}
	var y strings.Builder
	y.WriteString(`apiVersion: v1
kind: ConfigMap
metadata: {name: cfg}
data: {greeting: hello, level: "3"}
---
apiVersion: v1
kind: Secret
metadata: {name: sec}
stringData: {password: s3cret}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: big}
spec:
  selector: {matchLabels: {app: big}}
  template:
    metadata: {labels: {app: big}}
    spec:
      volumes:
      - {name: cfg, configMap: {name: cfg}}
      - {name: scratch, emptyDir: {}}
      containers:
`)
	for i := range 50 {
		fmt.Fprintf(&y, `      - name: c%d
        image: %s/img%d:1
        command: ["/bin/sh", "-c", "echo $(GREETING); exec sleep 1000"]
        env:
        - {name: GREETING, valueFrom: {configMapKeyRef: {name: cfg, key: greeting}}}
        - {name: PASSWORD, valueFrom: {secretKeyRef: {name: sec, key: password}}}
        - {name: POD, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
        envFrom: [{configMapRef: {name: cfg}, prefix: CFG_}]
        volumeMounts: [{name: cfg, mountPath: /etc/cfg}, {name: scratch, mountPath: /scratch}]
        readinessProbe: {exec: {command: ["cat", "/etc/cfg/level"]}}
`, i, reg.Host, i%5)
	}
	manifest := []byte(y.String())
	run := func(b *testing.B, res func() Resolver) {
		for b.Loop() {
			m, err := Parse(manifest)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := Generate(context.Background(), m, Options{Resolver: res(), KBSURL: "https://kbs.example"}); err != nil {
				b.Fatal(err)
			}
			if _, err := m.Write(); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.Run("resolve", func(b *testing.B) { run(b, func() Resolver { return &Registry{Insecure: true} }) })
	warm := &Registry{Insecure: true}
	b.Run("cached", func(b *testing.B) { run(b, func() Resolver { return warm }) })
}

// BenchmarkDecision: the agent's decision on the CreateContainerRequest a
// real node sent (testdata), under the generated policy of its Deployment
// and under Cocoon's hand-written default policy, alternately in one loop;
// both include decoding the request's JSON (the floor, measured too).
func BenchmarkDecision(b *testing.B) {
	reg := imagetest.StartRegistry(b)
	reg.Push(b, imagetest.New(b, ocispec.ImageConfig{Cmd: []string{"/bin/sh"}, Env: []string{"PATH=/bin"}},
		imagetest.GzipLayer(b, imagetest.File("etc/motd", "hello\n", 0o644))), "busybox:1", nil)
	manifest, err := os.ReadFile("testdata/deployment.yaml")
	if err != nil {
		b.Fatal(err)
	}
	m, err := Parse([]byte(strings.ReplaceAll(string(manifest), "IMAGE", reg.Host+"/busybox:1")))
	if err != nil {
		b.Fatal(err)
	}
	pods, err := Generate(context.Background(), m, Options{Resolver: &Registry{Insecure: true}})
	if err != nil {
		b.Fatal(err)
	}
	body, err := os.ReadFile("testdata/CreateContainerRequest.json")
	if err != nil {
		b.Fatal(err)
	}
	input := []byte(strings.ReplaceAll(string(body), "IMAGE", pods[0].Data.Containers["app"].Image))
	engines := map[string]*policy.Engine{}
	for name, text := range map[string]string{"generated": pods[0].Policy, "default": policy.Default()} {
		e, err := policy.New(context.Background(), text)
		if err != nil {
			b.Fatal(err)
		}
		if err := e.CheckInput(context.Background(), "CreateContainerRequest", input); err != nil {
			b.Fatalf("%s: %v", name, err)
		}
		engines[name] = e
	}
	var gen, def, floor time.Duration
	n := 0
	for b.Loop() {
		t0 := time.Now()
		if err := engines["generated"].CheckInput(context.Background(), "CreateContainerRequest", input); err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		if err := engines["default"].CheckInput(context.Background(), "CreateContainerRequest", input); err != nil {
			b.Fatal(err)
		}
		t2 := time.Now()
		var v any
		if err := json.Unmarshal(input, &v); err != nil {
			b.Fatal(err)
		}
		gen, def, floor = gen+t1.Sub(t0), def+t2.Sub(t1), floor+time.Since(t2)
		n++
	}
	b.ReportMetric(float64(gen.Microseconds())/float64(n), "generated-µs")
	b.ReportMetric(float64(def.Microseconds())/float64(n), "default-µs")
	b.ReportMetric(float64(floor.Microseconds())/float64(n), "json-µs")
	b.ReportMetric(float64(gen)/float64(def), "ratio")
}
