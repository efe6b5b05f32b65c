package e2e

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	internalapi "k8s.io/cri-api/pkg/apis"
	cri "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/cocoon-cc/cocoon/agent/policy"
	"github.com/cocoon-cc/cocoon/guest/attester/sample"
	"github.com/cocoon-cc/cocoon/image/imagetest"
	"github.com/cocoon-cc/cocoon/internal/testutil"
	"github.com/cocoon-cc/cocoon/kbs/client"
	"github.com/cocoon-cc/cocoon/protocol"
)

// svidCall is an SVID request the host saw on its way to the KBS.
type svidCall struct {
	path, auth string
	body       []byte
	status     int
}

// recordingProxy stands where the host stands between a guest and the
// KBS: it forwards everything and keeps the SVID requests it saw.
type recordingProxy struct {
	mu    sync.Mutex
	calls []svidCall
	next  http.Handler
}

func (p *recordingProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !strings.HasPrefix(r.URL.Path, "/kbs/v0/spiffe/") {
		p.next.ServeHTTP(w, r)
		return
	}
	body, _ := io.ReadAll(r.Body)
	r.Body = io.NopCloser(bytes.NewReader(body))
	sw := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
	p.next.ServeHTTP(sw, r)
	p.mu.Lock()
	p.calls = append(p.calls, svidCall{path: r.URL.Path, auth: r.Header.Get("Authorization"), body: body, status: sw.status})
	p.mu.Unlock()
}

type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (s *statusRecorder) WriteHeader(code int) { s.status = code; s.ResponseWriter.WriteHeader(code) }

// waitCall waits for an X.509-SVID request answered with status.
func (p *recordingProxy) waitCall(t *testing.T, status int) svidCall {
	t.Helper()
	for deadline := time.Now().Add(3 * time.Minute); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		p.mu.Lock()
		for _, c := range p.calls {
			if c.path == "/kbs/v0/spiffe/x509-svid" && c.status == status {
				p.mu.Unlock()
				return c
			}
		}
		p.mu.Unlock()
	}
	t.Fatalf("no X.509-SVID request answered %d", status)
	return svidCall{}
}

func (p *recordingProxy) reset() {
	p.mu.Lock()
	p.calls = nil
	p.mu.Unlock()
}

// spiffeEnv is a VM pod environment with a KBS of trust domain
// e2e.example giving the IDs below /ns/e2e/allowed/, reached by the
// guests through a recording proxy on the pod network's gateway, and an
// image holding the go-spiffe client.
type spiffeEnv struct {
	*podEnv
	kbs    string // the KBS's own URL, on the host's loopback
	guest  string // the URL guests use: the proxy's
	proxy  *recordingProxy
	client string // the client image
}

func newSPIFFEEnv(t testing.TB) *spiffeEnv {
	e := &spiffeEnv{podEnv: newVMPodEnv(t)}
	data := t.TempDir()
	cfg, u := kbsConfig(t, data, "http", "[spiffe]\ntrust_domain = \"e2e.example\"\n")
	k := startKBS(t, cfg, u, data, nil)
	e.kbs = u
	pol := filepath.Join(t.TempDir(), "spiffe.rego")
	if err := os.WriteFile(pol, []byte(testutil.SPIFFEPolicy("/ns/e2e/allowed/")), 0o600); err != nil {
		t.Fatal(err)
	}
	mustClient(t, "--url", u, "config", "--auth-private-key", k.adminKey(), "set-spiffe-policy", "--policy-file", pol)
	target, _ := url.Parse(u)
	e.proxy = &recordingProxy{next: httputil.NewSingleHostReverseProxy(target)}
	l, err := net.Listen("tcp", net.JoinHostPort(e.gateway.String(), "0"))
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: e.proxy}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	e.guest = "http://" + l.Addr().String()

	bin := filepath.Join(t.TempDir(), "spiffeclient")
	build := exec.Command("go", "build", "-trimpath", "-o", bin, "./spiffeclient")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build spiffeclient: %v\n%s", err, out)
	}
	b, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	img := imagetest.New(t, ocispec.ImageConfig{Cmd: []string{"/spiffeclient"}, Env: []string{"PATH=/bin"}},
		imagetest.BusyboxLayer(t), imagetest.GzipLayer(t, imagetest.File("spiffeclient", string(b), 0o755)))
	e.reg.Push(t, img, "spiffeclient:1", nil)
	e.client = e.reg.Host + "/spiffeclient:1"
	return e
}

// startPod runs a pod whose initdata names the KBS and SPIFFE ID id.
func (e *spiffeEnv) startPod(ctx context.Context, t *testing.T, rs internalapi.RuntimeService, name, id string) (string, *cri.PodSandboxConfig) {
	t.Helper()
	doc := testutil.SPIFFEInitdata(e.guest, id, "", policy.AllowAll())
	podID, sandbox := e.startPodInit(ctx, t, rs, "coco", name, t.TempDir(), testutil.InitdataDocAnnotation(t, doc))
	if _, err := e.ctrd.ImageService(t).PullImage(ctx, &cri.ImageSpec{Image: e.client}, nil, sandbox); err != nil {
		t.Fatal(err)
	}
	return podID, sandbox
}

// runClient runs the go-spiffe client in the pod and returns its output.
func (e *spiffeEnv) runClient(ctx context.Context, t *testing.T, rs internalapi.RuntimeService, podID string, sandbox *cri.PodSandboxConfig, args ...string) string {
	t.Helper()
	cid, err := rs.CreateContainer(ctx, podID, &cri.ContainerConfig{Metadata: &cri.ContainerMetadata{Name: "client"},
		Image: &cri.ImageSpec{Image: e.client}, LogPath: "client.log", Command: []string{"/spiffeclient"}, Args: args}, sandbox)
	if err != nil {
		t.Fatalf("CreateContainer: %v", err)
	}
	if err := rs.StartContainer(ctx, cid); err != nil {
		t.Fatal(err)
	}
	waitExited(ctx, t, rs, cid)
	log, err := os.ReadFile(filepath.Join(sandbox.LogDirectory, "client.log"))
	if err != nil {
		t.Fatal(err)
	}
	return string(log)
}

func stopPod(ctx context.Context, t *testing.T, rs internalapi.RuntimeService, podID string) {
	t.Helper()
	if err := rs.StopPodSandbox(ctx, podID); err != nil {
		t.Fatal(err)
	}
	if err := rs.RemovePodSandbox(ctx, podID); err != nil {
		t.Fatal(err)
	}
}

// TestPodSPIFFE runs VM pods (TCG) against the kbs binary: a pod whose
// initdata names an ID the policy gives gets an X.509-SVID, and a go-spiffe
// client in its container reads it, the bundle and a JWT-SVID through the
// Workload API unchanged; the request the host saw on its way cannot be
// replayed with another session's token; a pod whose ID the policy refuses
// gets no SVID.
func TestPodSPIFFE(t *testing.T) {
	e := newSPIFFEEnv(t)
	rs := e.ctrd.RuntimeService(t)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()

	podID, sandbox := e.startPod(ctx, t, rs, "spiffe-ok", "/ns/e2e/allowed/web")
	seen := e.proxy.waitCall(t, http.StatusOK)
	out := e.runClient(ctx, t, rs, podID, sandbox)
	for _, want := range []string{"x509-svid spiffe://e2e.example/ns/e2e/allowed/web", "bundle e2e.example authorities 1",
		"jwt-svid spiffe://e2e.example/ns/e2e/allowed/web audience [e2e]"} {
		if !strings.Contains(out, want) {
			t.Fatalf("client output lacks %q:\n%s", want, out)
		}
	}
	stopPod(ctx, t, rs, podID)

	// The host replays the guest's request with a session of its own.
	host, err := client.New(e.kbs, sample.Attester{}, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	token, err := host.Attest(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var kerr *protocol.Error
	hc, _ := client.HTTPClient("")
	err = client.Do(ctx, hc, http.MethodPost, e.kbs+"/kbs/v0/spiffe/x509-svid", token, bytes.NewReader(seen.body), nil)
	if !errors.As(err, &kerr) || kerr.Kind != protocol.KindPluginInternal || !strings.Contains(kerr.Detail, "not signed") {
		t.Fatalf("replayed SVID request: %v", err)
	}

	e.proxy.reset()
	podID, sandbox = e.startPod(ctx, t, rs, "spiffe-denied", "/ns/e2e/other/web")
	e.proxy.waitCall(t, http.StatusUnauthorized)
	out = e.runClient(ctx, t, rs, podID, sandbox, "-timeout", "5s")
	if !strings.Contains(out, "spiffeclient error") || strings.Contains(out, "x509-svid spiffe://") {
		t.Fatalf("a pod the policy refuses: %s", out)
	}
	stopPod(ctx, t, rs, podID)
	assertNoLeftovers(t, e.ctrd)
}
