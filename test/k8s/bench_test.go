package k8s

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"testing"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	cri "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/cocoon-cc/cocoon/image/imagetest"
	"github.com/cocoon-cc/cocoon/internal/testutil/k8stest"
)

// BenchmarkPodReady: the time from kubectl apply to a Ready pod, for a
// cocoon-qemu pod (a TCG VM here, its image pulled in the guest) and a runc
// pod on the same node, with a busybox image and with the same plus a
// 100 MiB layer of random (incompressible) bytes. The guest pulls its image
// anew for every pod; containerd keeps the runc pod's, so runc is measured
// twice per iteration: after the image is removed (a first pull: fetch and
// unpack on the host) and again with it cached. The two runtimes' images
// share no layer (each starts with a layer of its own), so neither finds
// the other's content or snapshots.
func BenchmarkPodReady(b *testing.B) {
	c := k8stest.Get(b)
	for _, size := range []struct {
		name  string
		bytes int
	}{{"busybox", 0}, {"100mib", 100 << 20}} {
		b.Run(size.name, func(b *testing.B) {
			runcImage := c.PushImage(b, benchImage(b, size.bytes), "bench-"+size.name+":1")
			cocoImage := c.PushImage(b, benchImage(b, size.bytes), "guest/bench-"+size.name+":1")
			var first, warm, coco time.Duration
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				removeImage(b, c, runcImage)
				b.StartTimer()
				first += podReady(b, c, "", runcImage)
				warm += podReady(b, c, "", runcImage)
				coco += podReady(b, c, "cocoon-qemu", cocoImage)
			}
			n := float64(b.N)
			b.ReportMetric(first.Seconds()/n, "runc-first-pull-s/pod")
			b.ReportMetric(warm.Seconds()/n, "runc-cached-s/pod")
			b.ReportMetric(coco.Seconds()/n, "coco-s/pod")
			b.ReportMetric(coco.Seconds()/first.Seconds(), "coco/runc-first-pull")
			b.ReportMetric(coco.Seconds()/warm.Seconds(), "coco/runc-cached")
		})
	}
}

// benchImage is a busybox image, with a layer of size random bytes when
// size is not 0, under a first layer of its own (a random id): no two
// such images share a layer.
func benchImage(b *testing.B, size int) *imagetest.Image {
	b.Helper()
	id := make([]byte, 16)
	rand.Read(id)
	layers := []imagetest.Layer{imagetest.GzipLayer(b, imagetest.File("etc/image-id", hex.EncodeToString(id), 0o644)),
		imagetest.BusyboxLayer(b)}
	if size > 0 {
		data := make([]byte, size)
		rand.Read(data)
		layers = append(layers, imagetest.GzipLayer(b, imagetest.File("data", string(data), 0o644)))
	}
	return imagetest.New(b, ocispec.ImageConfig{Cmd: []string{"/bin/sh"}, Env: []string{"PATH=/bin"}}, layers...)
}

// removeImage removes an image from the node's containerd (as crictl rmi),
// its content and snapshots with it.
func removeImage(b *testing.B, c *k8stest.Cluster, ref string) {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := c.Containerd.ImageService(b).RemoveImage(ctx, &cri.ImageSpec{Image: ref}); err != nil {
		b.Fatalf("remove image %s: %v", ref, err)
	}
}

// podReady applies a pod of the RuntimeClass (none: runc) running image,
// returns the time until it is Ready, then deletes it (outside the timer)
// and, for a Cocoon pod, waits until its shim and VM are gone.
func podReady(b *testing.B, c *k8stest.Cluster, runtimeClass, image string) time.Duration {
	b.Helper()
	class := ""
	if runtimeClass != "" {
		class = "  runtimeClassName: " + runtimeClass + "\n"
	}
	pod := `apiVersion: v1
kind: Pod
metadata: {name: bench, namespace: default}
spec:
` + class + `  automountServiceAccountToken: false
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: ` + image + `
    command: ["/bin/sleep", "1000"]
    resources: {limits: {memory: 256Mi}}
`
	start := time.Now()
	c.Apply(b, pod)
	c.WaitReady(b, "default", "bench")
	d := time.Since(start)
	b.StopTimer()
	defer b.StartTimer()
	c.Delete(b, pod)
	c.WaitGone(b, "coco shims and VMs", c.SandboxProcesses)
	return d
}
