package k8s

import (
	"bytes"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cocoon-cc/cocoon/agent/policy"
	"github.com/cocoon-cc/cocoon/internal/testutil"
	"github.com/cocoon-cc/cocoon/internal/testutil/k8stest"
	"github.com/cocoon-cc/cocoon/internal/testutil/nettest"
)

const (
	meshTD     = "spiffe://k8s.example"
	meshWeb    = meshTD + "/ns/mesh/web"
	meshClient = meshTD + "/ns/mesh/client"
	meshDB     = meshTD + "/ns/mesh/db" // no pod has it
	meshMarker = "mesh-plaintext-5d02"
)

// kbsLog reads the KBS's log as it runs and counts the X.509-SVIDs its
// audit lines say it issued, by SPIFFE ID.
type kbsLog struct {
	mu      sync.Mutex
	partial []byte
	svids   map[string]int
}

var auditSVID = regexp.MustCompile(`action=issue-svid type=x509-svid spiffe_id=(\S+)`)

func (l *kbsLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.svids == nil {
		l.svids = map[string]int{}
	}
	l.partial = append(l.partial, p...)
	for {
		line, rest, ok := bytes.Cut(l.partial, []byte("\n"))
		if !ok {
			return len(p), nil
		}
		if m := auditSVID.FindSubmatch(line); m != nil {
			l.svids[string(m[1])]++
		}
		l.partial = rest
	}
}

// issued counts the X.509-SVIDs the KBS gave id.
func (l *kbsLog) issued(id string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.svids[id]
}

// startSPIFFEKBS runs a KBS of trust domain k8s.example ([spiffe] plus
// extra) giving the IDs below /ns/mesh/, logging to logs.
func startSPIFFEKBS(t testing.TB, c *k8stest.Cluster, extra string, logs *kbsLog) *kbsServer {
	t.Helper()
	k := runKBS(t, c, "[spiffe]\ntrust_domain = \"k8s.example\"\n"+extra, logs, nil)
	pol := filepath.Join(t.TempDir(), "spiffe.rego")
	if err := os.WriteFile(pol, []byte(testutil.SPIFFEPolicy("/ns/mesh/")), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := k.admin("set-spiffe-policy", "--policy-file", pol); err != nil {
		t.Fatalf("set-spiffe-policy: %v\n%s", err, out)
	}
	return k
}

// meshPod is a cocoon-qemu pod whose initdata names the KBS, the SPIFFE
// ID path and the mesh rules, with containers (YAML list items).
func meshPod(t testing.TB, kbsURL, name, idPath, meshToml, containers string) string {
	t.Helper()
	doc := testutil.MeshInitdata(kbsURL, idPath, meshToml, policy.AllowAll())
	return `apiVersion: v1
kind: Pod
metadata:
  name: ` + name + `
  namespace: default
  labels: {app: ` + name + `}
  annotations: {io.katacontainers.config.hypervisor.cc_init_data: "` + testutil.InitdataDocAnnotation(t, doc) + `"}
spec:
  runtimeClassName: cocoon-qemu
  automountServiceAccountToken: false
  terminationGracePeriodSeconds: 1
  containers:
` + containers
}

// TestCocoonMesh is the attested mTLS mesh on Kubernetes: two cocoon-qemu
// pods with SVIDs from a KBS talk plain HTTP through a ClusterIP Service
// (kube-proxy's DNAT on the node, after the client's guest encrypted), and
// the host-side captures of the pods' interfaces hold no plaintext. A runc
// pod (no SVID) and a coco pod with another SPIFFE ID are refused by the
// server's rules; the client refuses the server behind a Service port whose
// rule names another ID; a connection made before both pods renewed their
// SVIDs (a 1-minute TTL) goes on after.
func TestCocoonMesh(t *testing.T) {
	c := k8stest.Get(t)
	logs := &kbsLog{}
	k := startSPIFFEKBS(t, c, "x509_svid_ttl_min = 1\n", logs)
	// A fixed ClusterIP (the static low band of the range) so the long
	// connection's container can name it.
	svc := netip.MustParsePrefix(c.ServiceCIDR).Addr().As4()
	svc[3] = 12
	svcIP := netip.AddrFrom4(svc).String()
	busybox := c.Busybox(t)
	clientRules := fmt.Sprintf("allow = [%q]\n[[outbound]]\ncidr = %q\nports = [80, 9000]\n"+
		"[[outbound]]\ncidr = %q\nports = [5432]\nallow = [%q]\n", meshWeb, c.ServiceCIDR, c.ServiceCIDR, meshDB)
	manifests := `apiVersion: v1
kind: Service
metadata: {name: mesh-web, namespace: default}
spec:
  selector: {app: mesh-web}
  clusterIP: ` + svcIP + `
  ports:
  - {name: http, port: 80, targetPort: 8080}
  - {name: echo, port: 9000, targetPort: 9000}
  - {name: db, port: 5432, targetPort: 9000}
---
` + meshPod(t, k.url, "mesh-web", "/ns/mesh/web", fmt.Sprintf("allow = [%q]\ninbound_ports = [8080, 9000]\n", meshClient), `  - name: web
    image: `+busybox+`
    command: ["/bin/sh", "-c", "mkdir -p /www && echo `+meshMarker+` > /www/index.html && /bin/busybox httpd -p 8080 -h /www && exec /bin/busybox nc -ll -p 9000 -e /bin/cat"]
`) + `---
` + meshPod(t, k.url, "mesh-client", "/ns/mesh/client", clientRules, `  - {name: c, image: `+busybox+`, command: ["/bin/sleep", "100000"]}
  - name: long
    image: `+busybox+`
    command: ["/bin/sh", "-c", "while true; do echo connect; i=0; while true; do echo tick-$i; i=$((i+1)); sleep 1; done | nc `+svcIP+` 9000; sleep 2; done"]
`) + `---
` + meshPod(t, k.url, "mesh-other", "/ns/mesh/other", fmt.Sprintf("allow = [%q]\n[[outbound]]\ncidr = %q\nports = [80]\n", meshWeb, c.ServiceCIDR),
		`  - {name: c, image: `+busybox+`, command: ["/bin/sleep", "100000"]}
`) + `---
apiVersion: v1
kind: Pod
metadata: {name: mesh-plain, namespace: default}
spec:
  automountServiceAccountToken: false
  terminationGracePeriodSeconds: 1
  containers:
  - {name: c, image: ` + busybox + `, command: ["/bin/sleep", "100000"]}
`
	c.Apply(t, manifests)
	defer c.Delete(t, manifests)
	for _, p := range []string{"mesh-web", "mesh-client", "mesh-other", "mesh-plain"} {
		c.WaitReady(t, "default", p)
	}
	waitFor(t, 3*time.Minute, "the KBS issued the three pods their SVIDs", func() bool {
		return logs.issued(meshWeb) > 0 && logs.issued(meshClient) > 0 && logs.issued(meshTD+"/ns/mesh/other") > 0
	})

	// What the host sees: every frame on the pods' host-side veths.
	ports, err := c.NodeExec("ip", "-o", "link", "show", "master", "cni0")
	if err != nil {
		t.Fatalf("the bridge's ports: %v %s", err, ports)
	}
	var stops []func() []byte
	for _, l := range strings.Split(strings.TrimSpace(ports), "\n") {
		if f := strings.Fields(l); len(f) > 1 {
			stops = append(stops, nettest.CaptureIn(t, c.NodeNetns(), strings.SplitN(strings.TrimSuffix(f[1], ":"), "@", 2)[0]))
		}
	}
	get := "printf 'GET /index.html HTTP/1.0\\r\\n\\r\\n' | nc -w 10 " + svcIP + " 80; true"
	sh := func(pod, script string) string {
		out, _ := c.TryKubectl("", "exec", pod, "-c", "c", "--", "/bin/sh", "-c", script)
		return out
	}
	waitFor(t, 2*time.Minute, "the client pod's GET through the Service and the mesh", func() bool {
		return strings.Contains(sh("mesh-client", get), meshMarker)
	})
	if out := sh("mesh-client", "echo echo-probe | nc -w 5 "+svcIP+" 9000; true"); !strings.Contains(out, "echo-probe") {
		t.Errorf("the echo port through the Service: %q", out)
	}
	// Port 5432 leads to the same pod, but the client's rule for it wants
	// the db's ID: the web's does not do.
	if out := sh("mesh-client", "echo db-probe | nc -w 5 "+svcIP+" 5432; true"); strings.Contains(out, "db-probe") {
		t.Errorf("the client took the web pod for %s: %q", meshDB, out)
	}
	// Another ID, with its SVID from the same KBS: the web's rules refuse it.
	if out := sh("mesh-other", get); strings.Contains(out, meshMarker) {
		t.Errorf("a pod with another SPIFFE ID was served: %q", out)
	}
	var seen []byte
	for _, stop := range stops {
		seen = append(seen, stop()...)
	}
	for _, plain := range []string{meshMarker, "GET /index.html", "echo-probe", "db-probe", "tick-"} {
		if bytes.Contains(seen, []byte(plain)) {
			t.Errorf("plaintext %q on a pod's host-side interface", plain)
		}
	}
	// The client's guest sent to the ClusterIP (kube-proxy's DNAT came
	// after, on the node): the address is in the frames leaving it.
	if !bytes.Contains(seen, svc[:]) {
		t.Errorf("no frame to the Service's %s on the pods' host-side interfaces (%d bytes seen)", svcIP, len(seen))
	}
	// A runc pod (no SVID, plain TCP) is refused; its own request is
	// plaintext on the wire, so it comes after the capture.
	if out, _ := c.TryKubectl("", "exec", "mesh-plain", "--", "/bin/sh", "-c", get); strings.Contains(out, meshMarker) {
		t.Errorf("a runc pod without an SVID was served: %q", out)
	}

	// Rotation: the long connection, open before both pods renew their
	// SVIDs, still echoes after.
	ticks := regexp.MustCompile(`tick-(\d+)`)
	last := func() (tick, connects int) {
		l, _ := c.TryKubectl("", "logs", "mesh-client", "-c", "long")
		if m := ticks.FindAllStringSubmatch(l, -1); len(m) > 0 {
			tick, _ = strconv.Atoi(m[len(m)-1][1])
		} else {
			tick = -1
		}
		return tick, strings.Count(l, "connect\n")
	}
	waitFor(t, time.Minute, "the long connection's first echo", func() bool { tick, _ := last(); return tick >= 0 })
	_, connects := last()
	web, client := logs.issued(meshWeb), logs.issued(meshClient)
	waitFor(t, 2*time.Minute, "both pods' SVID renewals", func() bool {
		return logs.issued(meshWeb) > web && logs.issued(meshClient) > client
	})
	tick, _ := last()
	waitFor(t, time.Minute, "echoes after the renewals", func() bool { now, _ := last(); return now >= tick+3 })
	if _, now := last(); now != connects {
		t.Errorf("the long connection broke during the renewals: %d connections, %d before", now, connects)
	}
	if out := sh("mesh-client", get); !strings.Contains(out, meshMarker) {
		t.Errorf("a new connection after the renewals: %q", out)
	}
}

// waitFor polls cond every 2 s (each poll may exec into a TCG guest) until
// it holds, failing the test naming what after timeout.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(timeout); !cond(); time.Sleep(2 * time.Second) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, timeout)
		}
	}
}
