package e2e

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"

	"strings"
	"testing"
	"time"

	"github.com/containerd/ttrpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/cocoon-cc/cocoon/guest/attester/sample"
	"github.com/cocoon-cc/cocoon/guest/cdh/kbc"
	"github.com/cocoon-cc/cocoon/guest/cdh/resource"
	"github.com/cocoon-cc/cocoon/guest/cdh/wrap"
	"github.com/cocoon-cc/cocoon/internal/testutil"
	cdhpb "github.com/cocoon-cc/cocoon/protocol/ttrpc/cdh"
	kppb "github.com/cocoon-cc/cocoon/protocol/ttrpc/keyprovider"
)

// cdhEnv is a KBS provisioned for the sample TEE and a cdh.toml for it.
type cdhEnv struct {
	kbs    *proc
	global []string
	cfg    string
	socket string
}

func newCDHEnv(t *testing.T) *cdhEnv {
	t.Helper()
	data := t.TempDir()
	cfg, url := kbsConfig(t, data, "http", "")
	k := startKBS(t, cfg, url, data, nil)
	provisionSample(t, url, k.adminKey())
	// Unix socket paths are short; t.TempDir names may not be.
	dir, err := os.MkdirTemp("", "cdh")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	e := &cdhEnv{kbs: k, global: []string{"--url", url}, cfg: filepath.Join(dir, "cdh.toml"),
		socket: filepath.Join(dir, "cdh.sock")}
	toml := fmt.Sprintf("socket = %q\n[kbc]\nname = \"cc_kbc\"\nurl = %q\n", "unix://"+e.socket, url)
	if err := os.WriteFile(e.cfg, []byte(toml), 0o600); err != nil {
		t.Fatal(err)
	}
	return e
}

func (e *cdhEnv) set(t *testing.T, path string, data []byte) {
	setResource(t, e.global, e.kbs.adminKey(), path, data)
}

// startDaemon runs a binary until the test ends and waits for ready.
func startDaemon(t *testing.T, ready func() bool, name string, args ...string) {
	t.Helper()
	var log bytes.Buffer
	cmd := exec.Command(bin(t, name), args...)
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		cmd.Wait()
		if t.Failed() {
			t.Logf("%s log:\n%s", name, log.String())
		}
	})
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if ready() {
			return
		}
	}
	t.Fatalf("%s did not start:\n%s", name, log.String())
}

func (e *cdhEnv) startCDH(t *testing.T) *ttrpc.Client {
	t.Helper()
	var conn net.Conn
	startDaemon(t, func() bool {
		c, err := net.Dial("unix", e.socket)
		conn = c
		return err == nil
	}, "confidential-data-hub", "-c", e.cfg, "--attester", "sample")
	c := ttrpc.NewClient(conn)
	t.Cleanup(func() { c.Close() })
	return c
}

// startREST runs api-server-rest for the data hub's resources and returns
// its URL.
func (e *cdhEnv) startREST(t *testing.T) string {
	t.Helper()
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	startDaemon(t, func() bool {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
		}
		return err == nil
	}, "api-server-rest", "--features", "resource", "--bind", addr, "--cdh_addr", "unix://"+e.socket)
	return "http://" + addr
}

func oneshot(t *testing.T, e *cdhEnv, args ...string) ([]byte, error) {
	t.Helper()
	cmd := exec.Command(bin(t, "cdh-oneshot"), append([]string{"-c", e.cfg, "--attester", "sample"}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("%v: %s", err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}

func wantCode(t *testing.T, what string, err error, want codes.Code) {
	t.Helper()
	if got := status.Code(err); got != want {
		t.Fatalf("%s: code %v (%v), want %v", what, got, err, want)
	}
}

// TestCDHGetResource: a sample guest gets a KBS secret through ttrpc (as a
// kata agent calls the CDH), REST (api-server-rest) and cdh-oneshot.
func TestCDHGetResource(t *testing.T) {
	e := newCDHEnv(t)
	secret := []byte("s3cr3t\x00\xff")
	e.set(t, "default/key/1", secret)
	ctx := context.Background()

	c := e.startCDH(t)
	res := cdhpb.NewGetResourceServiceClient(c)
	got, err := res.GetResource(ctx, &cdhpb.GetResourceRequest{ResourcePath: "kbs:///default/key/1"})
	if err != nil || !bytes.Equal(got.Resource, secret) {
		t.Fatalf("ttrpc GetResource = %q, %v", got.GetResource(), err)
	}
	_, err = res.GetResource(ctx, &cdhpb.GetResourceRequest{ResourcePath: "kbs:///default/../1"})
	wantCode(t, "malformed URI", err, codes.InvalidArgument)
	_, err = res.GetResource(ctx, &cdhpb.GetResourceRequest{ResourcePath: "kbs:///default/key/none"})
	wantCode(t, "missing resource", err, codes.NotFound)
	_, err = cdhpb.NewImagePullServiceClient(c).PullImage(ctx, &cdhpb.ImagePullRequest{ImageUrl: "busybox"})
	wantCode(t, "PullImage without a bundle path", err, codes.InvalidArgument)

	url := e.startREST(t)
	if code, body := httpGet(t, url+"/cdh/resource/default/key/1"); code != 200 || !bytes.Equal(body, secret) {
		t.Fatalf("REST resource = %d %q", code, body)
	}
	if code, _ := httpGet(t, url+"/cdh/resource/default/key/none"); code != http.StatusNotFound {
		t.Fatalf("REST missing resource = %d", code)
	}
	if code, _ := httpGet(t, url+"/aa/token?token_type=kbs"); code != http.StatusNotFound {
		t.Fatalf("REST /aa/token without the attestation feature = %d", code)
	}

	out, err := oneshot(t, e, "get-resource", "--resource-path", "kbs:///default/key/1")
	if err != nil || !bytes.Equal(out, secret) {
		t.Fatalf("cdh-oneshot get-resource = %q, %v", out, err)
	}
	if _, err := oneshot(t, e, "pull-image", "--image-url", "busybox"); err == nil ||
		!strings.Contains(err.Error(), "bundle-path") {
		t.Fatalf("cdh-oneshot pull-image without a bundle: %v", err)
	}
}

// TestRESTResourceQuery: a workload cannot smuggle resource plugin
// parameters to the KBS through an escaped '?' in a path segment
// (api-server-rest once sent /cdh/resource/default/key/secret%3foverride=yes
// on as the query override=yes); a query reaches the KBS only when the
// request has one, re-encoded. The KBS's resource policy reads the query.
func TestRESTResourceQuery(t *testing.T) {
	e := newCDHEnv(t)
	e.set(t, "default/key/secret", []byte("top"))
	e.set(t, "default/key/open", []byte("plain"))
	policy := filepath.Join(t.TempDir(), "p.rego")
	if err := os.WriteFile(policy, []byte(`package policy
default allow := false
allow if data["resource-path"][2] == "open"
allow if {
	data["resource-path"][2] == "secret"
	data.query.override == "yes"
	data.query["a b"] == "c&d/e"
}
`), 0o600); err != nil {
		t.Fatal(err)
	}
	mustClient(t, append(e.global, "config", "--auth-private-key", e.kbs.adminKey(), "set-resource-policy", "--policy-file", policy)...)
	e.startCDH(t)
	url := e.startREST(t)

	for _, tc := range []struct {
		path string
		code int
		body string
	}{
		{"/cdh/resource/default/key/open", 200, "plain"},
		{"/cdh/resource/default/key/secret", http.StatusForbidden, ""},
		// Injection attempts: an escaped '?', '/', '#' or '..' stays in its
		// segment, which the KBS's segment rule refuses before any call.
		{"/cdh/resource/default/key/secret%3foverride=yes&a+b=c%26d%2fe", http.StatusBadRequest, ""},
		{"/cdh/resource/default/key/secret%3Foverride=yes", http.StatusBadRequest, ""},
		{"/cdh/resource/default/key/open%2f..%2fsecret", http.StatusBadRequest, ""},
		{"/cdh/resource/default/key/secret%23x", http.StatusBadRequest, ""},
		{"/cdh/resource/default/key/%2e%2e", http.StatusBadRequest, ""},
		{"/cdh/resource/default/key/..", http.StatusNotFound, ""}, // the router cleans the path: no route
		{"/cdh/resource/default/key/secret?override=yes&a=%zz", http.StatusBadRequest, ""},
		// A query the workload writes is forwarded, encoded so that its
		// values cannot add parameters or path segments.
		{"/cdh/resource/default/key/secret?override=no&a+b=c%26d%2fe", http.StatusForbidden, ""},
		{"/cdh/resource/default/key/secret?override=yes&a+b=c%26d%2Fe", 200, "top"},
		{"/cdh/resource/default/key/secret?a%20b=c%26d/e&override=yes", 200, "top"},
	} {
		code, body := httpGet(t, url+tc.path)
		if code != tc.code || (tc.body != "" && string(body) != tc.body) {
			t.Errorf("GET %s = %d %q, want %d %q", tc.path, code, body, tc.code, tc.body)
		}
	}
}

func httpGet(t *testing.T, url string) (int, []byte) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// TestCDHSealedSecrets: secrets sealed with kbs-client seal-secret unseal
// only after attestation, only while the resource policy allows, and
// never when tampered with or signed by another key.
func TestCDHSealedSecrets(t *testing.T) {
	e := newCDHEnv(t)
	dir := t.TempDir()
	signing := writeECKey(t, dir, "signing.pem")
	jwk := mustClient(t, "seal-secret", "--signing-key", signing, "verification-key")
	e.set(t, "default/sealing/vk", []byte(jwk))
	e.set(t, "default/app/password", []byte("hunter2"))
	kek := make([]byte, 32)
	rand.Read(kek)
	kekFile, secretFile := filepath.Join(dir, "kek"), filepath.Join(dir, "secret")
	os.WriteFile(kekFile, kek, 0o600)
	os.WriteFile(secretFile, []byte("envelope secret"), 0o600)
	e.set(t, "default/kek/1", kek)

	seal := []string{"seal-secret", "--signing-key", signing, "--signing-kid", "kbs:///default/sealing/vk"}
	vault := mustClient(t, append(seal, "vault", "--resource-uri", "kbs:///default/app/password")...)
	envelope := mustClient(t, append(seal, "envelope", "--key-id", "kbs:///default/kek/1",
		"--kek-file", kekFile, "--secret-file", secretFile)...)
	other := mustClient(t, "seal-secret", "--signing-key", writeECKey(t, dir, "other.pem"),
		"--signing-kid", "kbs:///default/sealing/vk", "vault", "--resource-uri", "kbs:///default/app/password")

	ctx := context.Background()
	sealed := cdhpb.NewSealedSecretServiceClient(e.startCDH(t))
	unseal := func(s string) ([]byte, error) {
		out, err := sealed.UnsealSecret(ctx, &cdhpb.UnsealSecretInput{Secret: []byte(s)})
		return out.GetPlaintext(), err
	}
	if got, err := unseal(vault); err != nil || string(got) != "hunter2" {
		t.Fatalf("vault = %q, %v", got, err)
	}
	if got, err := unseal(envelope); err != nil || string(got) != "envelope secret" {
		t.Fatalf("envelope = %q, %v", got, err)
	}
	secretPath := filepath.Join(dir, "sealed")
	os.WriteFile(secretPath, []byte(envelope), 0o600)
	if got, err := oneshot(t, e, "unseal-secret", "--secret-path", secretPath); err != nil || string(got) != "envelope secret" {
		t.Fatalf("cdh-oneshot unseal-secret = %q, %v", got, err)
	}

	_, err := unseal(other)
	wantCode(t, "signed by another key", err, codes.PermissionDenied)
	parts := strings.Split(vault, ".")
	payload, _ := base64.RawURLEncoding.DecodeString(parts[2])
	parts[2] = base64.RawURLEncoding.EncodeToString(bytes.Replace(payload, []byte("password"), []byte("passwore"), 1))
	_, err = unseal(strings.Join(parts, "."))
	wantCode(t, "tampered payload", err, codes.PermissionDenied)
	_, err = unseal(strings.Join(parts[:3], ".") + ".")
	wantCode(t, "unsigned", err, codes.PermissionDenied)
	_, err = unseal("sealed.not-a-jws")
	wantCode(t, "garbage", err, codes.InvalidArgument)

	admin := append(append([]string{}, e.global...), "config", "--auth-private-key", e.kbs.adminKey())
	mustClient(t, append(admin, "set-resource-policy", "--deny-all")...)
	_, err = unseal(vault)
	wantCode(t, "resource policy denies", err, codes.PermissionDenied)
}

// TestCDHSealedNeedsAttestation: Cocoon's default resource policy never
// releases to the sample TEE, so nothing unseals there.
func TestCDHSealedNeedsAttestation(t *testing.T) {
	data := t.TempDir()
	cfg, url := kbsConfig(t, data, "http", "")
	k := startKBS(t, cfg, url, data, nil)
	setResource(t, []string{"--url", url}, k.adminKey(), "default/key/1", []byte("x"))
	kb, err := kbc.New(kbc.Config{URL: url}, sample.Attester{})
	if err != nil {
		t.Fatal(err)
	}
	u, _ := resource.Parse("kbs:///default/key/1")
	if _, err := kb.GetResource(context.Background(), u); !errors.Is(err, kbc.ErrDenied) {
		t.Fatalf("default policy: %v", err)
	}
}

// TestCDHUnwrapKey: a layer key wrapped as coco-keyprovider wraps it
// (AES-256-GCM under a KBS key, annotation packet in the ocicrypt key
// provider protocol) is unwrapped over ttrpc.
func TestCDHUnwrapKey(t *testing.T) {
	e := newCDHEnv(t)
	kek := make([]byte, 32)
	rand.Read(kek)
	e.set(t, "default/image-kek/1", kek)
	optsdata := []byte(`{"symkey":"c2VjcmV0","cipheroptions":{}}`)
	iv, wrapped, err := wrap.Encrypt(wrap.A256GCM, kek, optsdata)
	if err != nil {
		t.Fatal(err)
	}
	std := base64.StdEncoding.EncodeToString
	packet, _ := json.Marshal(map[string]string{"kid": "kbs:///default/image-kek/1", "wrapped_data": std(wrapped),
		"iv": std(iv), "wrap_type": "A256GCM"})
	input, _ := json.Marshal(map[string]any{"op": "keyunwrap", "keywrapparams": map[string]any{},
		"keyunwrapparams": map[string]any{"dc": nil, "annotation": std(packet)}})

	kp := kppb.NewKeyProviderServiceClient(e.startCDH(t))
	out, err := kp.UnWrapKey(context.Background(), &kppb.KeyProviderKeyWrapProtocolInput{KeyProviderKeyWrapProtocolInput: input})
	if err != nil {
		t.Fatal(err)
	}
	// Decoded as Go's ocicrypt declares it ([]byte).
	var res struct {
		KeyUnwrapResults struct {
			OptsData []byte `json:"optsdata"`
		} `json:"keyunwrapresults"`
	}
	if err := json.Unmarshal(out.KeyProviderKeyWrapProtocolOutput, &res); err != nil ||
		!bytes.Equal(res.KeyUnwrapResults.OptsData, optsdata) {
		t.Fatalf("UnWrapKey = %s, %v", out.KeyProviderKeyWrapProtocolOutput, err)
	}
	rand.Read(kek)
	e.set(t, "default/image-kek/1", kek)
	_, err = kp.UnWrapKey(context.Background(), &kppb.KeyProviderKeyWrapProtocolInput{KeyProviderKeyWrapProtocolInput: input})
	wantCode(t, "wrong KEK", err, codes.PermissionDenied)
}

func writeECKey(t *testing.T, dir, name string) string {
	t.Helper()
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.MarshalPKCS8PrivateKey(k)
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestCDHSecureMount formats a real loop device with LUKS2 under a key
// from the KBS (cdh-oneshot secure-mount), mounts its ext4 file system and
// reopens it. Where the kernel has no device-mapper (containers, some
// micro-VMs) only the format and the key check can run.
func TestCDHSecureMount(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("SKIPPED LOUDLY: SecureMount needs root for losetup and cryptsetup")
	}
	for _, tool := range []string{"cryptsetup", "losetup", "mkfs.ext4"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("SKIPPED LOUDLY: %s missing (scripts/install-deps.sh installs it)", tool)
		}
	}
	e := newCDHEnv(t)
	key := make([]byte, 32)
	rand.Read(key)
	e.set(t, "default/disk/key", key)

	dir := t.TempDir()
	dev, _ := testutil.LoopDevice(t, 64<<20)
	mnt := filepath.Join(dir, "mnt")
	os.Mkdir(mnt, 0o755)
	mapper := fmt.Sprintf("cdh-e2e-%d", os.Getpid())
	storage := func(source string) string {
		b, _ := json.Marshal(map[string]any{"volume_type": "block-device", "mount_point": mnt, "flags": []string{},
			"options": map[string]string{"devicePath": dev, "sourceType": source, "encryptionType": "luks2",
				"key": "kbs:///default/disk/key", "targetType": "fileSystem", "filesystemType": "ext4",
				"mapperName": mapper}})
		path := filepath.Join(dir, source+".json")
		os.WriteFile(path, b, 0o600)
		return path
	}
	_, mountErr := oneshot(t, e, "secure-mount", "--storage-path", storage("empty"))

	// The device is LUKS2 and opens with the KBS key only.
	check := func(k []byte) error {
		cmd := exec.Command("cryptsetup", "luksOpen", "--test-passphrase", "-d", "-", dev)
		cmd.Stdin = bytes.NewReader(k)
		return cmd.Run()
	}
	if err := check(key); err != nil {
		t.Fatalf("the KBS key does not open the formatted device: %v (secure-mount: %v)", err, mountErr)
	}
	if check([]byte("wrong key")) == nil {
		t.Fatal("a wrong key opens the device")
	}
	if !deviceMapper() {
		if mountErr == nil {
			t.Fatal("secure-mount succeeded without device-mapper")
		}
		t.Skipf("SKIPPED LOUDLY: the kernel has no device-mapper, so luksOpen cannot map the device "+
			"(format and key checked): %v", mountErr)
	}
	if mountErr != nil {
		t.Fatal(mountErr)
	}
	closeDev := func() {
		exec.Command("umount", mnt).Run()
		exec.Command("cryptsetup", "luksClose", mapper).Run()
	}
	t.Cleanup(closeDev)
	if err := os.WriteFile(filepath.Join(mnt, "data"), []byte("persisted"), 0o600); err != nil {
		t.Fatal(err)
	}
	closeDev()
	if _, err := oneshot(t, e, "secure-mount", "--storage-path", storage("encrypted")); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(mnt, "data")); err != nil || string(b) != "persisted" {
		t.Fatalf("reopened volume: %q, %v", b, err)
	}
}

func deviceMapper() bool {
	b, _ := os.ReadFile("/proc/misc")
	return strings.Contains(string(b), "device-mapper")
}

// BenchmarkCDHGetResource measures the CDH's GetResource against the real
// kbs binary: cold (a fresh TEE key, so auth + attest + fetch) and warm
// (the cached token: one fetch), reporting p50/p99.
func BenchmarkCDHGetResource(b *testing.B) {
	t := &testing.T{}
	data := b.TempDir()
	cfg, url := kbsConfig(t, data, "http", benchKBS)
	k := startKBS(t, cfg, url, data, nil)
	defer k.stop()
	provisionSample(t, url, k.adminKey())
	setResource(t, []string{"--url", url}, k.adminKey(), "default/key/bench", []byte("benchmark secret"))
	if t.Failed() {
		b.Fatal("setup failed")
	}
	u, _ := resource.Parse("kbs:///default/key/bench")
	newKBC := func(b *testing.B) *kbc.KBC {
		c, err := kbc.New(kbc.Config{URL: url}, sample.Attester{})
		if err != nil {
			b.Fatal(err)
		}
		return c
	}
	measure := func(b *testing.B, get func() *kbc.KBC) {
		lat := make([]time.Duration, 0, b.N)
		for b.Loop() {
			c := get()
			t0 := time.Now()
			if _, err := c.GetResource(context.Background(), u); err != nil {
				b.Fatal(err)
			}
			lat = append(lat, time.Since(t0))
		}
		slices.Sort(lat)
		b.ReportMetric(ms(lat[len(lat)/2]), "p50-ms")
		b.ReportMetric(ms(lat[len(lat)*99/100]), "p99-ms")
	}
	b.Run("cold", func(b *testing.B) { measure(b, func() *kbc.KBC { return newKBC(b) }) })
	b.Run("warm", func(b *testing.B) {
		c := newKBC(b)
		if _, err := c.GetResource(context.Background(), u); err != nil {
			b.Fatal(err)
		}
		measure(b, func() *kbc.KBC { return c })
	})
}

// TestCDHWithAttestationAgent runs the guest as deployed: the data hub gets
// its evidence from the attestation agent over ttrpc (the default
// attester), both real binaries, against the real KBS.
func TestCDHWithAttestationAgent(t *testing.T) {
	e := newCDHEnv(t)
	e.set(t, "default/key/aa", []byte("through the agent"))
	a := startAgent(t, fmt.Sprintf("[token_configs.kbs]\nurl = %q\n", e.global[1]), "--tee", "sample")
	cfg, _ := os.ReadFile(e.cfg)
	cfg = append(cfg, fmt.Sprintf("[aa]\naa_socket = %q\n", a.Socket)...)
	if err := os.WriteFile(e.cfg, cfg, 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin(t, "cdh-oneshot"), "-c", e.cfg, "--attester", "aa",
		"get-resource", "--resource-path", "kbs:///default/key/aa")
	out, err := cmd.Output()
	if err != nil || string(out) != "through the agent" {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		t.Fatalf("cdh-oneshot through the agent: %q, %v %s", out, err, stderr)
	}
}

// TestRESTServerOutlivesTheDataHub: api-server-rest may start before the
// data hub and keeps working across its restarts, answering 503 meanwhile.
func TestRESTServerOutlivesTheDataHub(t *testing.T) {
	e := newCDHEnv(t)
	e.set(t, "default/key/rest", []byte("late"))
	url := e.startREST(t) + "/cdh/resource/default/key/rest"
	if code, _ := httpGet(t, url); code != http.StatusServiceUnavailable {
		t.Fatalf("before the data hub: %d, want 503", code)
	}
	e.startCDH(t)
	if code, body := httpGet(t, url); code != http.StatusOK || string(body) != "late" {
		t.Fatalf("after the data hub started: %d %q", code, body)
	}
}
