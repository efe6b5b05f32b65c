package mesh_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/vishvananda/netns"

	"github.com/cocoon-cc/cocoon/guest/attester/sample"
	"github.com/cocoon-cc/cocoon/guest/mesh"
	"github.com/cocoon-cc/cocoon/guest/spiffe"
	"github.com/cocoon-cc/cocoon/internal/testutil"
	"github.com/cocoon-cc/cocoon/internal/testutil/kbstest"
	"github.com/cocoon-cc/cocoon/internal/testutil/nettest"
	"github.com/cocoon-cc/cocoon/kbs/client"
)

const (
	web    = "spiffe://example.org/ns/shop/web"
	front  = "spiffe://example.org/ns/shop/front"
	other  = "spiffe://example.org/ns/other/app"
	secret = "plaintext-marker-7f3a"
)

const policy = `package policy
import rego.v1
default allow := false
allow if startswith(data["spiffe-id"], "spiffe://example.org/ns/")
`

// pod is a network namespace on the test's bridge with its SPIFFE
// identity served over the Workload API, as the guest gives a coco pod.
type pod struct {
	ns     string // netns name
	ip     net.IP
	veth   string // the host's end of its interface
	src    *spiffe.Source
	socket string
}

func (p *pod) do(t *testing.T, f func()) {
	t.Helper()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer orig.Close()
	h, err := netns.GetFromName(p.ns)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if err := netns.Set(h); err != nil {
		t.Fatal(err)
	}
	defer netns.Set(orig)
	f()
}

func newPod(t *testing.T, ctx context.Context, kbsURL, br string, ip net.IP, id string) *pod {
	t.Helper()
	nsPath := nettest.Namespace(t)
	p := &pod{ns: filepath.Base(nsPath), ip: ip, veth: "ccm" + ip.String()[strings.LastIndex(ip.String(), ".")+1:] + fmt.Sprint(os.Getpid()%1000)}
	nettest.Run(t, "ip", "link", "add", p.veth, "type", "veth", "peer", "name", "eth0", "netns", p.ns)
	t.Cleanup(func() { exec.Command("ip", "link", "del", p.veth).Run() })
	nettest.Run(t, "ip", "link", "set", p.veth, "master", br, "up")
	nettest.Run(t, "ip", "-n", p.ns, "addr", "add", ip.String()+"/24", "dev", "eth0")
	nettest.Run(t, "ip", "-n", p.ns, "link", "set", "eth0", "up")
	nettest.Run(t, "ip", "-n", p.ns, "link", "set", "lo", "up")
	c, err := client.New(kbsURL, sample.Attester{}, client.Options{InitData: spiffeInitdata(id, "")})
	if err != nil {
		t.Fatal(err)
	}
	p.src = spiffe.NewSource(c, slog.New(slog.NewTextHandler(io.Discard, nil)))
	go p.src.Run(ctx)
	p.socket = filepath.Join(t.TempDir(), spiffe.SocketName)
	go spiffe.NewServer(p.src).Serve(ctx, p.socket)
	return p
}

func spiffeInitdata(id, meshToml string) []byte {
	s := "version = \"0.1.0\"\nalgorithm = \"sha384\"\n[data]\n\"spiffe.toml\" = 'id = \"" + id + "\"'\n"
	if meshToml != "" {
		s += "\"mesh.toml\" = '''\n" + meshToml + "'''\n"
	}
	return []byte(s)
}

// mesh runs coco-mesh in the pod's namespace, as the agent does in the
// guest, with the rules of meshToml.
func (p *pod) mesh(t *testing.T, id, meshToml string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "initdata.toml")
	if err := os.WriteFile(path, spiffeInitdata(id, meshToml), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("ip", "netns", "exec", p.ns, testutil.Bin(t, "coco-mesh"), "--initdata", path, "--socket", p.socket)
	cmd.Stderr = testWriter{t}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Signal(syscall.SIGTERM); cmd.Wait() })
	// Ready once the inbound listener answers.
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		var err error
		p.do(t, func() {
			var c net.Conn
			if c, err = net.Dial("tcp4", fmt.Sprintf("127.0.0.1:%d", mesh.DefaultOutboundPort)); err == nil {
				c.Close()
			}
		})
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("coco-mesh never listened: %v", err)
		}
	}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Logf("%s", bytes.TrimSpace(b))
	return len(b), nil
}

// TestMesh: two pods in their own network namespaces on a bridge (a
// node's pod network), each with its SVID from a real KBS over the
// Workload API and coco-mesh redirecting its traffic; the apps speak
// plain HTTP. The host's capture sees no plaintext; a peer without an
// SVID and a peer whose SPIFFE ID the rules do not allow are refused;
// go-spiffe's own mTLS client with an allowed ID is served; SVID
// rotation leaves a long connection working.
func TestMesh(t *testing.T) {
	nettest.RequireRoot(t)
	if _, err := exec.LookPath("iptables-restore"); err != nil {
		t.Fatal("iptables-restore is needed (scripts/install-deps.sh installs iptables)")
	}
	k := kbstest.Start(t, kbstest.Options{Extra: "[spiffe]\ntrust_domain = \"example.org\"\n"})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	if err := k.Admin.SetSPIFFEPolicy(ctx, policy); err != nil {
		t.Fatal(err)
	}
	sub := nettest.Subnet(t)
	br, _ := nettest.Bridge(t, sub)
	client := newPod(t, ctx, k.URL, br, nettest.Host(sub, 2), "/ns/shop/front")
	server := newPod(t, ctx, k.URL, br, nettest.Host(sub, 3), "/ns/shop/web")
	intruder := newPod(t, ctx, k.URL, br, nettest.Host(sub, 4), "/ns/other/app")
	for _, p := range []*pod{client, server, intruder} {
		select {
		case <-p.src.Ready():
		case <-ctx.Done():
			t.Fatal("no SVID from the KBS")
		}
	}

	// The server pod's app: plain HTTP on 8080.
	var l net.Listener
	server.do(t, func() {
		var err error
		if l, err = net.Listen("tcp4", "0.0.0.0:8080"); err != nil {
			t.Fatal(err)
		}
	})
	hs := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s for %s", secret, r.URL.Path)
	})}
	go hs.Serve(l)
	t.Cleanup(func() { hs.Close() })

	server.mesh(t, web, "allow = [\""+front+"\"]\ninbound_ports = [8080]\n")
	client.mesh(t, front, fmt.Sprintf("allow = [%q]\n[[outbound]]\ncidr = %q\nports = [8080]\n", web, sub.String()))
	serverAddr := net.JoinHostPort(server.ip.String(), "8080")
	stopCapture := nettest.Capture(t, server.veth)

	// The client app: plain HTTP over one kept-alive connection.
	var conn net.Conn
	client.do(t, func() {
		var err error
		if conn, err = net.Dial("tcp4", serverAddr); err != nil {
			t.Fatal(err)
		}
	})
	t.Cleanup(func() { conn.Close() })
	br1 := bufio.NewReader(conn)
	get := func(path string) string {
		t.Helper()
		conn.SetDeadline(time.Now().Add(20 * time.Second))
		fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: web\r\n\r\n", path)
		resp, err := http.ReadResponse(br1, nil)
		if err != nil {
			t.Fatalf("GET %s through the mesh: %v", path, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	if got := get("/one"); got != secret+" for /one" {
		t.Fatalf("through the mesh: %q", got)
	}

	// Both pods rotate their SVIDs (new keys): the long connection goes on.
	for _, p := range []*pod{client, server} {
		old, _ := p.src.GetX509SVID()
		if err := p.src.Renew(ctx); err != nil {
			t.Fatal(err)
		}
		now, _ := p.src.GetX509SVID()
		if now.Certificates[0].SerialNumber.Cmp(old.Certificates[0].SerialNumber) == 0 {
			t.Fatal("no new SVID")
		}
	}
	if got := get("/after-rotation"); got != secret+" for /after-rotation" {
		t.Fatalf("after rotation: %q", got)
	}

	// A pod without an SVID (a runc pod, plain TCP) is refused.
	intruder.do(t, func() {
		c, err := net.DialTimeout("tcp4", serverAddr, 10*time.Second)
		if err != nil {
			return // refused outright is refused too
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		fmt.Fprintf(c, "GET /plain HTTP/1.1\r\nHost: web\r\n\r\n")
		if b, _ := io.ReadAll(c); bytes.Contains(b, []byte(secret)) {
			t.Fatalf("a plain client was served: %q", b)
		}
	})

	// go-spiffe mTLS clients: another SPIFFE ID is refused by the rules,
	// the allowed one is served and sees the server's ID checked.
	mtlsGet := func(p *pod, src *spiffe.Source) (string, error) {
		var out string
		var err error
		p.do(t, func() {
			var raw net.Conn
			if raw, err = net.DialTimeout("tcp4", serverAddr, 10*time.Second); err != nil {
				return
			}
			defer raw.Close()
			raw.SetDeadline(time.Now().Add(10 * time.Second))
			c := tls.Client(raw, tlsconfig.MTLSClientConfig(src, src, tlsconfig.AuthorizeID(spiffeid.RequireFromString(web))))
			if err = c.Handshake(); err != nil {
				return
			}
			fmt.Fprintf(c, "GET /mtls HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n")
			var b []byte
			b, err = io.ReadAll(c)
			out = string(b)
		})
		return out, err
	}
	if out, err := mtlsGet(intruder, intruder.src); err == nil && strings.Contains(out, secret) {
		t.Fatalf("%s was served: %q", other, out)
	}
	// The intruder's namespace has no mesh: a second identity source in
	// it stands for an Envoy/Istio sidecar holding the allowed SVID.
	if out, err := mtlsGet(intruder, client.src); err != nil || !strings.Contains(out, secret+" for /mtls") {
		t.Fatalf("go-spiffe client with %s: %q %v", front, out, err)
	}

	if seen := stopCapture(); len(seen) == 0 || bytes.Contains(seen, []byte(secret)) || bytes.Contains(seen, []byte("/after-rotation")) {
		t.Fatalf("host capture: %d bytes, plaintext in it: %v", len(seen), bytes.Contains(seen, []byte(secret)))
	}
}
