package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/crane"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"google.golang.org/grpc/codes"

	"github.com/cocoon-cc/cocoon/image/decrypt"
	"github.com/cocoon-cc/cocoon/image/imagetest"
	"github.com/cocoon-cc/cocoon/internal/testutil"
	cdhpb "github.com/cocoon-cc/cocoon/protocol/ttrpc/cdh"
)

// startKeyProvider runs coco-keyprovider against the KBS and returns an
// ocicrypt key provider configuration naming it.
func startKeyProvider(t *testing.T, kbsURL, adminKey string) string {
	t.Helper()
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	var log bytes.Buffer
	cmd := exec.Command(bin(t, "coco-keyprovider"), "--socket", addr, "--kbs", kbsURL, "--auth-private-key", adminKey)
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		cmd.Wait()
		if t.Failed() {
			t.Logf("coco-keyprovider log:\n%s", log.String())
		}
	})
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("coco-keyprovider did not listen:\n%s", log.String())
		}
	}
	conf := filepath.Join(t.TempDir(), "ocicrypt.conf")
	b, _ := json.Marshal(map[string]any{"key-providers": map[string]any{"attestation-agent": map[string]string{"grpc": addr}}})
	if err := os.WriteFile(conf, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return conf
}

// encryptLayer encrypts l as skopeo copy --encryption-key
// provider:attestation-agent:... does, with ocicrypt itself calling
// coco-keyprovider over gRPC. (Debian's skopeo 1.9 is built without
// ocicrypt's key provider support; ocicrypt runs in a helper process since
// its key provider proto clashes with Cocoon's in one binary.)
func encryptLayer(t *testing.T, ocienc string, l imagetest.Layer) imagetest.Layer {
	t.Helper()
	dir := t.TempDir()
	in, out := filepath.Join(dir, "plain"), filepath.Join(dir, "enc")
	if err := os.WriteFile(in, l.Blob, 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(ocienc, in, out, l.MediaType,
		"attestation-agent:keyid=kbs:///default/key/e2e-image::algorithm=A256GCM")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	js, err := cmd.Output()
	if err != nil {
		t.Fatalf("ocienc: %v\n%s", err, stderr.String())
	}
	var ann map[string]string
	if err := json.Unmarshal(js, &ann); err != nil {
		t.Fatal(err)
	}
	ct, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return imagetest.Layer{MediaType: l.MediaType + "+encrypted", Blob: ct, DiffID: l.DiffID, Annotations: ann}
}

// buildOcienc builds the ocicrypt helper.
func buildOcienc(t *testing.T) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "ocienc")
	cmd := exec.Command("go", "build", "-o", out, "./image/imagetest/ocienc")
	cmd.Dir = testutil.RepoRoot(t)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build ocienc: %v\n%s", err, b)
	}
	return out
}

// TestEncryptedImagePull: the owner encrypts with ocicrypt through
// coco-keyprovider, which registers the KEK in a real KBS; the guest pulls
// from docker-registry and decrypts only after attesting to the KBS.
func TestEncryptedImagePull(t *testing.T) {
	data := t.TempDir()
	cfg, url := kbsConfig(t, data, "http", "")
	k := startKBS(t, cfg, url, data, nil)
	provisionSample(t, url, k.adminKey())
	ocicryptConf := startKeyProvider(t, url, k.adminKey())

	t.Setenv("OCICRYPT_KEYPROVIDER_CONFIG", ocicryptConf)
	ocienc := buildOcienc(t)
	reg := imagetest.StartRegistry(t)
	img := imagetest.New(t, ocispec.ImageConfig{Cmd: []string{"/bin/secret"}},
		encryptLayer(t, ocienc, imagetest.GzipLayer(t, imagetest.File("bin/secret", "#!/bin/sh\necho classified\n", 0o755))),
		encryptLayer(t, ocienc, imagetest.GzipLayer(t, imagetest.File("etc/model.bin", strings.Repeat("weights", 50000), 0o600))))
	reg.Push(t, img, "enc/app:v1", nil)

	// The registry holds ciphertext only.
	raw, err := crane.Manifest(reg.Host+"/enc/app:v1", crane.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	var m ocispec.Manifest
	json.Unmarshal(raw, &m)
	for _, l := range m.Layers {
		if !decrypt.IsEncrypted(l.MediaType) || l.Annotations[decrypt.AnnotationKeyProvider] == "" {
			t.Fatalf("layer not encrypted for the attestation agent: %+v", l)
		}
	}

	// The guest's data hub pulls: cdh-oneshot with a cdh.toml naming the
	// KBS and a registries.conf, attesting with the sample TEE.
	dir := t.TempDir()
	regConf := filepath.Join(dir, "registries.conf")
	os.WriteFile(regConf, []byte(fmt.Sprintf("[[registry]]\nlocation = %q\ninsecure = true\n", reg.Host)), 0o600)
	cdhConf := filepath.Join(dir, "cdh.toml")
	os.WriteFile(cdhConf, []byte(fmt.Sprintf("socket = \"unix://%s/cdh.sock\"\n[kbc]\nname = \"cc_kbc\"\nurl = %q\n"+
		"[image]\nregistry_configuration_uri = \"file://%s\"\nwork_dir = %q\n", dir, url, regConf, filepath.Join(dir, "work"))), 0o600)
	var progress bytes.Buffer
	pullImage := func(bundle string) (string, error) {
		cmd := exec.Command(bin(t, "cdh-oneshot"), "-c", cdhConf, "--attester", "sample",
			"pull-image", "--image-url", reg.Host+"/enc/app:v1", "--bundle-path", bundle)
		progress.Reset()
		cmd.Stderr = &progress
		out, err := cmd.Output()
		return string(out) + progress.String(), err
	}
	parent := imagetest.BundleDir(t)
	bundle := filepath.Join(parent, "bundle")
	if out, err := pullImage(bundle); err != nil || !strings.HasPrefix(out, "sha256:") {
		t.Fatalf("cdh-oneshot pull-image: %v\n%s", err, out)
	}
	// Not a terminal: plain progress lines, the last one complete.
	if lines := strings.Split(strings.TrimSpace(progress.String()), "\n"); !strings.Contains(lines[len(lines)-1], "100% ") ||
		!strings.Contains(lines[len(lines)-1], " 2/2 layers ") {
		t.Fatalf("progress on stderr:\n%s", progress.String())
	}
	b, err := os.ReadFile(filepath.Join(bundle, "rootfs/bin/secret"))
	if err != nil || !strings.Contains(string(b), "classified") {
		t.Fatalf("decrypted layer: %q %v", b, err)
	}
	if _, err := os.Stat(filepath.Join(bundle, "config.json")); err != nil {
		t.Fatalf("bundle has no config.json: %v", err)
	}

	// Once the KBS stops releasing the key, the image cannot be opened and
	// nothing is left behind.
	mustClient(t, "--url", url, "config", "--auth-private-key", k.adminKey(), "set-resource-policy", "--deny-all")
	if out, err := pullImage(filepath.Join(parent, "denied")); err == nil || !strings.Contains(out, "PolicyDeny") {
		t.Fatalf("pull without key release: %v\n%s", err, out)
	}
	if ents, _ := os.ReadDir(parent); len(ents) != 1 {
		t.Fatalf("left behind: %v", ents)
	}
}

// TestCDHRefusesDecompressionBomb: the data hub bounds what a pull
// extracts (cdh.toml's [image] max_unpacked_size_mib here; by default the
// space its work_dir has left): a 64 MiB layer of zeros, 64 KiB on the
// registry, fails with ResourceExhausted and leaves nothing behind.
func TestCDHRefusesDecompressionBomb(t *testing.T) {
	reg := imagetest.StartRegistry(t)
	bomb := imagetest.GzipLayer(t, imagetest.File("zeros", strings.Repeat("\x00", 64<<20), 0o644))
	reg.Push(t, imagetest.New(t, ocispec.ImageConfig{}, bomb), "bomb:1", nil)
	dir, err := os.MkdirTemp("", "cdh")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	regConf := filepath.Join(dir, "registries.conf")
	work := filepath.Join(dir, "work")
	e := &cdhEnv{cfg: filepath.Join(dir, "cdh.toml"), socket: filepath.Join(dir, "cdh.sock")}
	if err := os.WriteFile(regConf, []byte(fmt.Sprintf("[[registry]]\nlocation = %q\ninsecure = true\n", reg.Host)), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(e.cfg, []byte(fmt.Sprintf("socket = \"unix://%s\"\n[kbc]\nname = \"cc_kbc\"\nurl = \"http://127.0.0.1:1\"\n"+
		"[image]\nregistry_configuration_uri = \"file://%s\"\nwork_dir = %q\nmax_unpacked_size_mib = 8\n", e.socket, regConf, work)), 0o600); err != nil {
		t.Fatal(err)
	}
	c := e.startCDH(t)
	parent := imagetest.BundleDir(t)
	_, err = cdhpb.NewImagePullServiceClient(c).PullImage(context.Background(),
		&cdhpb.ImagePullRequest{ImageUrl: reg.Host + "/bomb:1", BundlePath: filepath.Join(parent, "bundle")})
	wantCode(t, "pull of a decompression bomb", err, codes.ResourceExhausted)
	for _, d := range []string{parent, filepath.Join(work, "content/ingest"), filepath.Join(work, "content/layers/sha256")} {
		if ents, _ := os.ReadDir(d); len(ents) != 0 {
			t.Errorf("left behind in %s: %v", d, ents)
		}
	}
}
