package e2e

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"image/png"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/cocoon-cc/cocoon/internal/testutil"
	"github.com/cocoon-cc/cocoon/kbs"
)

// dashboardACLs: admin may do anything, viewer may only read the
// dashboard, rv-reader only reference values.
const dashboardACLs = `
[admin]
authorization_mode = "AuthenticatedAuthorization"

[[admin.authentication.bearer_jwt.identity_providers]]
public_key_uri = %q

[[admin.authorization.regex_acl.acls]]
role = "admin"
allowed_endpoints = "^/.+$"

[[admin.authorization.regex_acl.acls]]
role = "viewer"
allowed_endpoints = "^/dashboard(/.*)?$"
allowed_methods = ["GET"]

[[admin.authorization.regex_acl.acls]]
role = "rv-reader"
allowed_endpoints = "^/kbs/v0/reference-value/.+$"
`

// writeAdminKeyPair writes a new Ed25519 admin key pair (PKCS#8, PKIX).
func writeAdminKeyPair(t *testing.T) (privPath, pubPath string) {
	t.Helper()
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	dir := t.TempDir()
	privDER, _ := x509.MarshalPKCS8PrivateKey(priv)
	pubDER, _ := x509.MarshalPKIXPublicKey(pub)
	privPath, pubPath = filepath.Join(dir, "admin.key"), filepath.Join(dir, "admin.pub")
	if err := os.WriteFile(privPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: privDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(pubPath, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER}), 0o644); err != nil {
		t.Fatal(err)
	}
	return privPath, pubPath
}

// startChromium starts Debian's chromium headless with a fresh profile,
// none of its background connections (the machine has no internet), and
// no sandbox when running as root (it refuses to start otherwise).
func startChromium(t *testing.T) context.Context {
	t.Helper()
	path, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatal("chromium missing (scripts/install-deps.sh installs it):", err)
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path), chromedp.DisableGPU, chromedp.NoFirstRun, chromedp.UserDataDir(t.TempDir()),
		chromedp.Flag("disable-background-networking", true), chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true), chromedp.Flag("disable-quic", true), chromedp.WindowSize(1280, 1700))
	if os.Geteuid() == 0 {
		opts = append(opts, chromedp.NoSandbox)
	}
	ctx, cancelTimeout := context.WithTimeout(context.Background(), 2*time.Minute)
	alloc, cancelAlloc := chromedp.NewExecAllocator(ctx, opts...)
	browser, cancelBrowser := chromedp.NewContext(alloc)
	t.Cleanup(func() {
		cancelBrowser() // closes the browser and waits for its process
		cancelAlloc()
		cancelTimeout()
	})
	return browser
}

// dashboardDOM is what the page shows, read from its DOM.
type dashboardDOM struct {
	State  string                `json:"state"`
	Tiles  map[string]string     `json:"tiles"`
	Tables map[string][][]string `json:"tables"`
	Bars   map[string]int        `json:"bars"`
	HTML   string                `json:"html"`
}

const readDashboard = `(() => {
  const tiles = {}, tables = {}, bars = {};
  for (const e of document.querySelectorAll(".tile-value")) tiles[e.id] = e.textContent;
  for (const e of document.querySelectorAll("table")) tables[e.id] = [...e.tBodies[0].rows].map((r) => [...r.cells].map((c) => c.textContent));
  for (const e of document.querySelectorAll(".chart")) bars[e.id] = e.querySelectorAll("svg rect.bar").length;
  return { state: document.body.dataset.state, tiles, tables, bars, html: document.documentElement.outerHTML };
})()`

// TestKBSDashboardInBrowser attests and asks for resources against the
// real kbs binary, then reads the dashboard in headless Chromium: it
// shows what /dashboard/api/summary and /metrics report, draws a bar per
// count, and shows nothing without a token of a role allowed to read it.
func TestKBSDashboardInBrowser(t *testing.T) {
	browser := startChromium(t)
	keyPath, pubPath := writeAdminKeyPair(t)
	data := t.TempDir()
	cfg, url := kbsConfig(t, data, "http", fmt.Sprintf(dashboardACLs, pubPath))
	startKBS(t, cfg, url, data, nil)
	global := []string{"--url", url}
	const secret = "s3cr3t-for-the-dashboard"
	setResource(t, global, keyPath, "default/key/dash", []byte(secret))

	// A guest with no reference values registered: contraindicated, denied.
	if _, err := kbsClient(t, "--url", url, "get-resource", "--path", "default/key/dash"); err == nil || !strings.Contains(err.Error(), "PolicyDeny") {
		t.Fatalf("contraindicated guest: %v", err)
	}
	provisionSampleWith(t, global, keyPath)
	for range 2 {
		mustClient(t, "--url", url, "get-resource", "--path", "default/key/dash")
	}
	if _, err := kbsClient(t, "--url", url, "get-resource", "--path", "default/key/absent"); err == nil || !strings.Contains(err.Error(), "PluginInternalError") {
		t.Fatalf("absent resource: %v", err)
	}
	if resp, err := http.Get(url + "/kbs/v0/resource/default/key/dash"); err != nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("no token: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}

	// Tokens to paste, as an operator makes them.
	token := func(role string) string {
		return mustClient(t, "config", "--auth-private-key", keyPath, "--role", role, "sign-admin-token", "--ttl", "10m")
	}

	// Without a token: the sign-in form, no numbers, and the API refuses.
	if err := chromedp.Do(browser, chromedp.Navigate(url+kbs.DashboardPath), chromedp.WaitVisible(chromedp.CSS("#login-form"))); err != nil {
		t.Fatal(err)
	}
	apiStatus, err := chromedp.Run(browser, chromedp.Evaluate[string](
		`fetch("/dashboard/api/summary").then(async (r) => r.status + " " + (await r.json()).type)`, chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatal(err)
	}
	if apiStatus != "401 https://github.com/confidential-containers/kbs/errors/AdminAuthAccess" {
		t.Errorf("API from the page without a token: %s", apiStatus)
	}
	if dom := readDOM(t, browser); dom.State != "signed-out" || dom.Tiles["tile-attestations"] != "" || len(dom.Tables["table-attestations"]) != 0 {
		t.Errorf("without a token the page shows %+v", dom)
	}

	// A role the ACL does not allow the dashboard: refused, with the reason.
	signIn(t, browser, token("rv-reader"), "refused")
	msg, err := chromedp.Run(browser, chromedp.Text(chromedp.CSS("#login-error")))
	if err != nil || !strings.Contains(msg, "role not allowed") {
		t.Errorf("refusal shown: %q %v", msg, err)
	}
	if dom := readDOM(t, browser); dom.Tiles["tile-attestations"] != "" {
		t.Errorf("a refused role sees numbers: %+v", dom.Tiles)
	}

	// The viewer role sees the numbers the API and /metrics report.
	viewer := token("viewer")
	signIn(t, browser, viewer, "loaded")
	dom := readDOM(t, browser)
	sum := fetchSummary(t, url, viewer)
	_, metrics := httpGet(t, url+"/metrics")
	checkDashboard(t, dom, sum, metrics)
	if strings.Contains(dom.HTML, secret) || strings.Contains(dom.HTML, viewer) {
		t.Error("the page shows a secret or the token")
	}
	checkScreenshot(t, browser)

	// Signing out forgets the token.
	if err := chromedp.Do(browser, chromedp.Click(chromedp.CSS("#signout")), chromedp.WaitVisible(chromedp.CSS("#login-form"))); err != nil {
		t.Fatal(err)
	}
	if left, err := chromedp.Run(browser, chromedp.Evaluate[string](`String(sessionStorage.getItem("kbs-admin-token"))`)); err != nil || left != "null" {
		t.Errorf("token kept after signing out: %q %v", left, err)
	}
}

func signIn(t *testing.T, browser context.Context, token, state string) {
	t.Helper()
	err := chromedp.Do(browser,
		chromedp.WaitVisible(chromedp.CSS("#token")),
		chromedp.SetValue(chromedp.CSS("#token"), token),
		chromedp.Click(chromedp.CSS(`#login-form button[type="submit"]`)),
		chromedp.Poll[chromedp.Void](fmt.Sprintf(`document.body.dataset.state === %q`, state)))
	if err != nil {
		t.Fatalf("sign in, waiting for %s: %v (state %s)", state, err, readDOM(t, browser).State)
	}
}

func readDOM(t *testing.T, browser context.Context) dashboardDOM {
	t.Helper()
	dom, err := chromedp.Run(browser, chromedp.Evaluate[dashboardDOM](readDashboard))
	if err != nil {
		t.Fatal(err)
	}
	return dom
}

func fetchSummary(t *testing.T, url, token string) kbs.Summary {
	t.Helper()
	req, _ := http.NewRequest("GET", url+"/dashboard/api/summary", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var sum kbs.Summary
	if err := json.NewDecoder(resp.Body).Decode(&sum); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("summary: %d %v", resp.StatusCode, err)
	}
	return sum
}

// checkDashboard compares the page with the API's summary and /metrics,
// and both with what the test did: 1 contraindicated and 3 affirming
// attestations, 2 releases, 3 refusals (policy, absent, no token).
func checkDashboard(t *testing.T, dom dashboardDOM, sum kbs.Summary, metrics []byte) {
	t.Helper()
	metric := func(name string, labels map[string]string) string {
		return strconv.FormatFloat(testutil.MetricSum(t, metrics, name, labels), 'f', -1, 64)
	}
	for tile, want := range map[string]string{
		"tile-attestations":   metric("kbs_attestations_total", nil),
		"tile-attest-success": metric("kbs_attestations_total", map[string]string{"result": "success"}),
		"tile-attest-failure": metric("kbs_attestations_total", map[string]string{"result": "failure"}),
		"tile-released":       metric("kbs_resource_releases_total", nil),
		"tile-refused":        metric("kbs_resource_refusals_total", nil),
		"tile-rvs":            strconv.Itoa(len(sum.ReferenceValues)),
		"tile-policies":       strconv.Itoa(len(sum.Policies)),
		"tile-replicas":       "1",
	} {
		if dom.Tiles[tile] != want {
			t.Errorf("%s shows %q, want %q", tile, dom.Tiles[tile], want)
		}
	}
	if dom.Tiles["tile-attestations"] != "4" || dom.Tiles["tile-released"] != "2" || dom.Tiles["tile-refused"] != "3" {
		t.Errorf("tiles %v: want 4 attestations, 2 releases, 3 refusals", dom.Tiles)
	}
	var att, req [][]string
	for _, a := range sum.Attestations {
		att = append(att, []string{a.TEE, a.Status, strconv.FormatUint(a.Count, 10)})
		if a.Status != "failure" && metric("kbs_attestation_appraisals_total", map[string]string{"tee": a.TEE, "status": a.Status}) != strconv.FormatUint(a.Count, 10) {
			t.Errorf("/metrics disagrees with the summary on %+v", a)
		}
	}
	for _, r := range sum.Requests {
		req = append(req, []string{r.Resource, r.Reason, strconv.FormatUint(r.Count, 10)})
	}
	if want := [][]string{{"sample", "affirming", "3"}, {"sample", "contraindicated", "1"}}; !reflect.DeepEqual(att, want) || !reflect.DeepEqual(dom.Tables["table-attestations"], want) {
		t.Errorf("attestations: page %v, API %v, want %v", dom.Tables["table-attestations"], att, want)
	}
	if want := [][]string{{"default/key/absent", "PluginInternalError", "1"}, {"default/key/dash", "PolicyDeny", "1"},
		{"default/key/dash", "TokenNotFound", "1"}, {"default/key/dash", "released", "2"}}; !reflect.DeepEqual(req, want) || !reflect.DeepEqual(dom.Tables["table-requests"], want) {
		t.Errorf("resource requests: page %v, API %v, want %v", dom.Tables["table-requests"], req, want)
	}
	if len(dom.Tables["table-rv"]) != 4 || len(dom.Tables["table-policies"]) != len(sum.Policies) || len(dom.Tables["table-replicas"]) != 1 {
		t.Errorf("tables %v", dom.Tables)
	}
	attPoints, reqPoints := 0, 0
	for _, s := range sum.AttestationsPerMin {
		attPoints += len(s.Points)
	}
	for _, s := range sum.RequestsPerMinute {
		reqPoints += len(s.Points)
	}
	for chart, want := range map[string]int{
		"chart-attestations-time": attPoints, "chart-attestations-tee": len(sum.Attestations),
		"chart-requests-time": reqPoints, "chart-requests-resource": len(sum.Requests), "chart-rv": len(sum.ReferenceValues),
	} {
		if dom.Bars[chart] != want || want == 0 {
			t.Errorf("%s has %d bars, want %d", chart, dom.Bars[chart], want)
		}
	}
}

// checkScreenshot takes a screenshot of the whole page into a temporary
// directory (COCOON_SCREENSHOT_DIR keeps it) and checks that the plots'
// colours are on it: affirming and released bars are green.
func checkScreenshot(t *testing.T, browser context.Context) {
	t.Helper()
	shot, err := chromedp.Run(browser, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	dir := os.Getenv("COCOON_SCREENSHOT_DIR")
	if dir == "" {
		dir = t.TempDir()
	}
	path := filepath.Join(dir, "dashboard.png")
	if err := os.WriteFile(path, shot, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s", path)
	img, err := png.Decode(bytes.NewReader(shot))
	if err != nil {
		t.Fatal(err)
	}
	green := 0
	b := img.Bounds()
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			r, g, bl, _ := img.At(x, y).RGBA()
			if r>>8 == 0x2e && g>>8 == 0x7d && bl>>8 == 0x32 {
				green++
			}
		}
	}
	if b.Dx() < 1000 || green < 500 {
		t.Errorf("screenshot %dx%d has %d pixels of the bars' green", b.Dx(), b.Dy(), green)
	}
}
