package e2e

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	internalapi "k8s.io/cri-api/pkg/apis"
	cri "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/cocoon-cc/cocoon/agent/policy"
	"github.com/cocoon-cc/cocoon/internal/testutil"
)

// startMeshPod runs a coco pod on the pod network whose initdata names the
// KBS, SPIFFE ID id and the mesh rules meshToml, with one container
// running script; it returns the container and the pod's IP.
func (e *spiffeEnv) startMeshPod(ctx context.Context, t *testing.T, rs internalapi.RuntimeService, name, id, meshToml, script string) (string, string) {
	t.Helper()
	doc := testutil.MeshInitdata(e.guest, id, meshToml, policy.AllowAll())
	podID, sandbox := e.startPodInit(ctx, t, rs, "coco", name, t.TempDir(), testutil.InitdataDocAnnotation(t, doc))
	t.Cleanup(func() {
		rs.StopPodSandbox(context.Background(), podID)
		rs.RemovePodSandbox(context.Background(), podID)
	})
	cid := e.runContainer(ctx, t, rs, podID, sandbox, &cri.ContainerConfig{Metadata: &cri.ContainerMetadata{Name: "c"},
		Image: &cri.ImageSpec{Image: e.image}, Command: []string{"/bin/sh", "-c", script}})
	st, err := rs.PodSandboxStatus(ctx, podID, false)
	if err != nil {
		t.Fatal(err)
	}
	return cid, st.Status.GetNetwork().GetIp()
}

// TestPodMesh runs two coco pods (QEMU TCG) with SVIDs from the kbs
// binary and coco-mesh in their guests: the client pod's plain HTTP
// reaches the web pod's plain server in mTLS, with no plaintext on the
// pods' host-side interfaces, and a runc pod (no SVID) is refused.
func TestPodMesh(t *testing.T) {
	e := newSPIFFEEnv(t)
	rs := e.ctrd.RuntimeService(t)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	const (
		webID    = "spiffe://e2e.example/ns/e2e/allowed/web"
		clientID = "spiffe://e2e.example/ns/e2e/allowed/client"
		marker   = "mesh-plaintext-9c1e"
	)
	subnet := (&net.IPNet{IP: e.gateway.Mask(net.CIDRMask(24, 32)), Mask: net.CIDRMask(24, 32)}).String()
	_, webIP := e.startMeshPod(ctx, t, rs, "mesh-web", "/ns/e2e/allowed/web",
		fmt.Sprintf("allow = [%q]\ninbound_ports = [8080]\n", clientID),
		"mkdir -p /www && echo "+marker+" > /www/index.html && exec /bin/busybox httpd -f -p 8080 -h /www")
	clientC, _ := e.startMeshPod(ctx, t, rs, "mesh-client", "/ns/e2e/allowed/client",
		fmt.Sprintf("allow = [%q]\n[[outbound]]\ncidr = %q\nports = [8080]\n", webID, subnet), "exec /bin/sleep 1000")
	stopCapture := captureBridge(t, e.bridge)

	get := "printf 'GET /index.html HTTP/1.0\\r\\n\\r\\n' | nc -w 10 " + webIP + " 8080"
	var out string
	for deadline := time.Now().Add(2 * time.Minute); ; time.Sleep(2 * time.Second) {
		if out = e.exec(ctx, t, rs, clientC, get); strings.Contains(out, marker) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the client pod never got the page through the mesh: %q", out)
		}
	}
	seen := stopCapture()
	if bytes.Contains(seen, []byte(marker)) || bytes.Contains(seen, []byte("GET /index.html")) {
		t.Fatal("plaintext on a pod's host-side interface")
	}
	if len(seen) == 0 {
		t.Fatal("the capture saw nothing")
	}
	// A runc pod (no SVID, plain TCP) is refused; its own request is
	// plaintext on the wire, so it comes after the capture.
	runc, _, _ := e.runNetPodOn(ctx, t, rs, "runc", "runc-peer", "exec /bin/sleep 1000")
	if out := e.exec(ctx, t, rs, runc.cid, get+"; true"); strings.Contains(out, marker) {
		t.Fatalf("a runc pod without an SVID was served: %q", out)
	}
}
