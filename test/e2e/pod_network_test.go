package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/portforward"
	"k8s.io/client-go/transport/spdy"
	internalapi "k8s.io/cri-api/pkg/apis"
	cri "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/cocoon-cc/cocoon/agent/policy"
	"github.com/cocoon-cc/cocoon/internal/testutil/nettest"
)

// TestPodNetwork runs two VM pods (QEMU TCG) on CNI's pod network through
// CRI: the pod's container sees its pod IP and serves HTTP, which the host
// and the other pod reach at that IP; the guests reach no service on the
// host's loopback, by any address; deleting the pods leaves no tap, qdisc,
// QEMU or shim.
func TestPodNetwork(t *testing.T) {
	e := newVMPodEnv(t)
	rs := e.ctrd.RuntimeService(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	// A service on the host's loopback only, as etcd or a kubelet's
	// read-only port would be: no pod may reach it.
	secretPort, reached := nettest.LoopbackService(t)

	web, webIP, webNS := e.runNetPod(ctx, t, rs, "web",
		"mkdir -p /www && echo hello-from-$(hostname) > /www/index.html && exec /bin/busybox httpd -f -p 8080 -h /www")
	client, clientIP, _ := e.runNetPod(ctx, t, rs, "client", "exec /bin/sleep 1000")
	if webIP == clientIP || !strings.HasPrefix(webIP, e.gateway.String()[:strings.LastIndex(e.gateway.String(), ".")+1]) {
		t.Fatalf("pod IPs %s and %s, gateway %s", webIP, clientIP, e.gateway)
	}
	// The tap and its redirects are in the pod's namespace.
	for _, args := range [][]string{{"ip", "-n", webNS, "link", "show", "tap0_coco"}, {"tc", "-n", webNS, "filter", "show", "dev", "eth0", "ingress"}} {
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil || len(out) == 0 {
			t.Errorf("%v: %v %s", args, err, out)
		}
	}

	// The container has the pod's address on eth0, as CNI gave it.
	out := e.exec(ctx, t, rs, web.cid, "ip -4 -o addr show eth0")
	if !strings.Contains(out, " "+webIP+"/") {
		t.Errorf("the guest's eth0: %q, want %s", out, webIP)
	}
	// From the host, to the pod IP (as the kubelet's probes go).
	if body := awaitGet(net.JoinHostPort(webIP, "8080"), 30*time.Second); body != "hello-from-web\n" {
		t.Fatalf("GET from the host: %q", body)
	}
	// Through CRI's port forwarding (kubectl port-forward), which dials
	// localhost in the pod's namespace on the host.
	local, stop := portForward(ctx, t, rs, web.id, 8080)
	if body := awaitGet(local, 10*time.Second); body != "hello-from-web\n" {
		t.Errorf("GET through port forwarding: %q", body)
	}
	stop()
	// From the other pod, with the client the loopback probes below use.
	if out := e.exec(ctx, t, rs, client.cid, "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 10 "+webIP+" 8080"); !strings.HasSuffix(out, "\r\n\r\nhello-from-web\n") {
		t.Errorf("GET from the client pod: %q", out)
	}
	// Nothing on the host's loopback answers a guest: not at 127.0.0.1
	// (the guest's own), not at 10.0.2.2 (QEMU's user network's host,
	// which pods do not have), not at the node's address.
	probe := ""
	for _, a := range []string{"127.0.0.1", "10.0.2.2", e.gateway.String()} {
		probe += fmt.Sprintf("echo x | nc -w 3 %s %d && echo reached-%s; ", a, secretPort, a)
	}
	if out := e.exec(ctx, t, rs, client.cid, probe+"true"); strings.Contains(out, "reached") || reached() != 0 {
		t.Errorf("a guest reached the host's loopback: %q, %d connections", out, reached())
	}

	links := bridgePorts(t, e.bridge)
	for _, p := range []netPod{web, client} {
		if err := rs.StopPodSandbox(ctx, p.id); err != nil {
			t.Fatal(err)
		}
		if err := rs.RemovePodSandbox(ctx, p.id); err != nil {
			t.Fatal(err)
		}
	}
	assertNoLeftovers(t, e.ctrd)
	if left := bridgePorts(t, e.bridge); len(left) != 0 {
		t.Errorf("links left on the bridge: %v (had %v)", left, links)
	}
	if out, _ := exec.Command("ip", "netns", "list").CombinedOutput(); strings.Contains(string(out), webNS) {
		t.Errorf("the pod's namespace %s is left", webNS)
	}
}

// awaitGet returns the body of http://addr/ once it answers 200 OK, within
// wait; "" if it never does.
func awaitGet(addr string, wait time.Duration) string {
	for deadline := time.Now().Add(wait); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		resp, err := (&http.Client{Timeout: 5 * time.Second}).Get("http://" + addr + "/")
		if err != nil {
			continue
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			return string(b)
		}
	}
	return ""
}

// portForward forwards a local port to the pod's port as the kubelet
// does kubectl's (CRI PortForward, SPDY to containerd's streaming server)
// and returns the local address and the function stopping it.
func portForward(ctx context.Context, t *testing.T, rs internalapi.RuntimeService, podID string, port int32) (string, func()) {
	t.Helper()
	r, err := rs.PortForward(ctx, &cri.PortForwardRequest{PodSandboxId: podID, Port: []int32{port}})
	if err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(r.Url)
	if err != nil {
		t.Fatal(err)
	}
	rt, upgrader, err := spdy.RoundTripperFor(&rest.Config{})
	if err != nil {
		t.Fatal(err)
	}
	stop, ready := make(chan struct{}), make(chan struct{})
	pf, err := portforward.NewOnAddresses(spdy.NewDialer(upgrader, &http.Client{Transport: rt}, "POST", u),
		[]string{"127.0.0.1"}, []string{fmt.Sprintf("0:%d", port)}, stop, ready, io.Discard, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- pf.ForwardPorts() }()
	select {
	case <-ready:
	case err := <-errc:
		t.Fatalf("port forwarding: %v", err)
	}
	ports, err := pf.GetPorts()
	if err != nil || len(ports) != 1 {
		t.Fatalf("forwarded ports %v %v", ports, err)
	}
	return fmt.Sprintf("127.0.0.1:%d", ports[0].Local), func() { close(stop) }
}

// netPod is a running pod with one container.
type netPod struct{ id, cid string }

// runNetPod starts a coco pod on the pod network with one container
// running script, and returns it with its IP and network namespace's name.
func (e *podEnv) runNetPod(ctx context.Context, t testing.TB, rs internalapi.RuntimeService, name, script string) (netPod, string, string) {
	t.Helper()
	return e.runNetPodOn(ctx, t, rs, "coco", name, script)
}

// runNetPodOn is runNetPod on the runtime handler (coco, runc).
func (e *podEnv) runNetPodOn(ctx context.Context, t testing.TB, rs internalapi.RuntimeService, handler, name, script string) (netPod, string, string) {
	t.Helper()
	id, sandbox := e.startPodOn(ctx, t, rs, handler, name, "", policy.AllowAll())
	t.Cleanup(func() { rs.StopPodSandbox(context.Background(), id); rs.RemovePodSandbox(context.Background(), id) })
	cid := e.runContainer(ctx, t, rs, id, sandbox, &cri.ContainerConfig{Metadata: &cri.ContainerMetadata{Name: "c"},
		Image: &cri.ImageSpec{Image: e.image}, Command: []string{"/bin/sh", "-c", script}})
	st, err := rs.PodSandboxStatus(ctx, id, true)
	if err != nil {
		t.Fatal(err)
	}
	var info struct {
		RuntimeSpec struct {
			Linux struct {
				Namespaces []struct{ Type, Path string }
			}
		}
	}
	if err := json.Unmarshal([]byte(st.Info["info"]), &info); err != nil {
		t.Fatal(err)
	}
	ns := ""
	for _, n := range info.RuntimeSpec.Linux.Namespaces {
		if n.Type == "network" {
			ns = filepath.Base(n.Path)
		}
	}
	return netPod{id: id, cid: cid}, st.Status.GetNetwork().GetIp(), ns
}

// exec runs a shell command in a container and returns its output.
func (e *podEnv) exec(ctx context.Context, t testing.TB, rs internalapi.RuntimeService, cid, cmd string) string {
	t.Helper()
	stdout, stderr, err := rs.ExecSync(ctx, cid, []string{"/bin/sh", "-c", cmd}, 60*time.Second)
	if err != nil {
		t.Errorf("exec %q: %v %s", cmd, err, stderr)
	}
	return string(stdout)
}

// captureBridge records every frame crossing the host's ends of the pods'
// veths on bridge, as the host could; the returned function stops and
// returns what was seen.
func captureBridge(t *testing.T, bridge string) func() []byte {
	var stops []func() []byte
	for _, p := range bridgePorts(t, bridge) {
		stops = append(stops, nettest.Capture(t, strings.SplitN(p, "@", 2)[0]))
	}
	return func() []byte {
		var seen []byte
		for _, stop := range stops {
			seen = append(seen, stop()...)
		}
		return seen
	}
}

// bridgePorts lists the links enslaved to the bridge (the pods' veths).
func bridgePorts(t *testing.T, bridge string) []string {
	out, err := exec.Command("ip", "-o", "link", "show", "master", bridge).CombinedOutput()
	if err != nil {
		t.Fatalf("ip link: %v %s", err, out)
	}
	var names []string
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if f := strings.Fields(l); len(f) > 1 {
			names = append(names, strings.TrimSuffix(f[1], ":"))
		}
	}
	return names
}
