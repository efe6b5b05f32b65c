package e2e

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cocoon-cc/cocoon/attestation/verifier/cca/ccatest"
	"github.com/cocoon-cc/cocoon/attestation/verifier/nvidia"
	"github.com/cocoon-cc/cocoon/attestation/verifier/nvidia/nvidiatest"
	"github.com/cocoon-cc/cocoon/guest/attester"
	"github.com/cocoon-cc/cocoon/internal/testutil"
	"github.com/cocoon-cc/cocoon/kbs/client"
	"github.com/cocoon-cc/cocoon/protocol"
)

const nvData = "trustee/deps/verifier/test_data/nvidia/"

// hopperReport is Trustee's Hopper GPU report (it answers nonce
// hopperNonce) and hopperDevice the device evidence of it.
const hopperNonce = "931d8dd0add203ac3d8b4fbde75e115278eefcdceac5b87671a748f32364dfcb"

func hopperReport(t *testing.T) []byte {
	b, _ := os.ReadFile(filepath.Join(testutil.Fixtures(t), nvData, "hopperAttestationReport.txt"))
	r, err := hex.DecodeString(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// gpuReferenceValues are the reference values the default GPU policy reads,
// taken from the claims Trustee derives from its Hopper report.
func gpuReferenceValues(t *testing.T) map[string]any {
	var claims struct {
		Config       map[string]any    `json:"config"`
		Measurements map[string]string `json:"measurements"`
	}
	b, _ := os.ReadFile(filepath.Join(testutil.Fixtures(t), nvData, "hopperAttestationReport-claims.txt"))
	if err := json.Unmarshal(b, &claims); err != nil {
		t.Fatal(err)
	}
	golden := map[string][]string{}
	for i, v := range claims.Measurements {
		golden[i] = []string{v}
	}
	return map[string]any{
		"allowed_vbios_versions":  []any{claims.Config["vbios_version"]},
		"allowed_driver_versions": []any{claims.Config["driver_version"]},
		"nvidia_gpu_measurements": []any{golden},
	}
}

// registerGPUReferenceValues registers gpuReferenceValues with kbs-client
// (admin: its global flags and config's), as an RVPS message in dir.
func registerGPUReferenceValues(t *testing.T, admin []string, dir string) {
	rv, _ := json.Marshal(gpuReferenceValues(t))
	msg, _ := json.Marshal(map[string]string{"version": "0.1.0", "type": "sample", "payload": base64.StdEncoding.EncodeToString(rv)})
	msgFile := filepath.Join(dir, "rv.json")
	os.WriteFile(msgFile, msg, 0o600)
	mustClient(t, append(admin, "set-reference-value", "--message-file", msgFile)...)
}

// TestVerifyOfflineNvidia verifies Trustee's Hopper report (with the
// nonce it answers) against NVIDIA's pinned device root, appraised by the
// default GPU policy with and without reference values.
func TestVerifyOfflineNvidia(t *testing.T) {
	fx := testutil.Fixtures(t)
	dir := t.TempDir()
	chain, _ := os.ReadFile(filepath.Join(fx, nvData, "hopper_cert_chain_case1.txt"))
	ev, _ := json.Marshal(nvidia.Evidence{Devices: []nvidia.Device{{Arch: "HOPPER", UUID: "GPU-1",
		Evidence: hex.EncodeToString(hopperReport(t)), Certificate: base64.StdEncoding.EncodeToString(chain)}}})
	evidence := filepath.Join(dir, "gpu.json")
	os.WriteFile(evidence, ev, 0o600)
	rv, _ := json.Marshal(gpuReferenceValues(t))
	rvFile := filepath.Join(dir, "rv.json")
	os.WriteFile(rvFile, rv, 0o600)

	args := []string{"verify", "--tee", "nvidia", "--evidence", evidence, "--report-data", hopperNonce}
	out, err := attestationService(t, args...)
	if err != nil || !strings.Contains(out, "gpu0: evidence verified; appraisal warning") || !strings.Contains(out, `"vbios_version":"96.00.9f.00.01"`) {
		t.Fatalf("genuine report: %v\n%s", err, out)
	}
	if out, err = attestationService(t, append(args, "--reference-values", rvFile)...); err != nil || !strings.Contains(out, "gpu0: evidence verified; appraisal affirming") {
		t.Fatalf("genuine report with reference values: %v\n%s", err, out)
	}
	verifyRefusals(t, []string{"verify", "--tee", "nvidia", "--evidence", evidence}, map[string]refusal{
		"another nonce":          {[]string{"--report-data", strings.Repeat("11", 32)}, "nonce"},
		"before its chain began": {[]string{"--report-data", hopperNonce, "--time", "2021-01-01T00:00:00Z"}, "not valid"},
	})
}

// TestKBSReleasesToCPUAndGPU runs the protocol with composite evidence:
// a CCA realm (live realm tokens) as the primary evidence and a Hopper
// GPU's report (re-signed by a test attestation key for each nonce) as
// additional evidence, bound as Trustee binds device evidence. A resource
// policy requiring an affirming CPU and GPU releases only once both are.
func TestKBSReleasesToCPUAndGPU(t *testing.T) {
	iss := ccaIssuer(t)
	k, url, gpu, dir := deviceKBS(t, "")
	setResource(t, []string{"--url", url}, k.adminKey(), "default/key/gpu", []byte("for the CPU and its GPU"))
	admin := []string{"--url", url, "config", "--auth-private-key", k.adminKey()}
	policy := filepath.Join(dir, "both.rego")
	os.WriteFile(policy, []byte(`package policy
import rego.v1
default allow := false
allow if {
	input.submods.cpu0["ear.status"] == "affirming"
	input.submods.gpu0["ear.status"] == "affirming"
}
`), 0o600)
	mustClient(t, append(admin, "set-resource-policy", "--policy-file", policy)...)
	mustClient(t, append(admin, "set-sample-reference-value", "cca.realm.cca-realm-initial-measurement", ccaRIM)...)

	fetch := func(devices ...attester.Attester) ([]byte, error) {
		return fetchAttested(url, ccatest.Attester{Issuer: iss}, client.Options{Devices: devices}, "default/key/gpu")
	}
	var kerr *protocol.Error
	if _, err := fetch(gpu); !errors.As(err, &kerr) || kerr.Kind != protocol.KindPolicyDeny {
		t.Fatalf("GPU without reference values: %v, want PolicyDeny", err)
	}
	registerGPUReferenceValues(t, admin, dir)

	got, err := fetch(gpu)
	if err != nil || string(got) != "for the CPU and its GPU" {
		t.Fatalf("affirming CPU and GPU: %q, %v", got, err)
	}
	if _, err := fetch(); !errors.As(err, &kerr) || kerr.Kind != protocol.KindPolicyDeny {
		t.Fatalf("CPU alone: %v, want PolicyDeny", err)
	}
	// A GPU report for another challenge than this handshake's.
	if _, err := fetch(staleGPU{gpu}); !errors.As(err, &kerr) || kerr.Kind != protocol.KindAttestation {
		t.Fatalf("stale GPU report: %v, want AttestationError", err)
	}
}

// staleGPU answers every challenge with a report for another one.
type staleGPU struct{ *nvidiatest.GPU }

func (g staleGPU) Evidence(ctx context.Context, _ []byte) (json.RawMessage, error) {
	return g.GPU.Evidence(ctx, make([]byte, 48))
}

// deviceKBS starts the kbs binary (extra: more configuration) verifying
// CCA tokens with Trustee's stores and GPUs of a test GPU's root; dir is
// a directory for the caller's files.
func deviceKBS(t *testing.T, extra string) (k *proc, url string, gpu *nvidiatest.GPU, dir string) {
	gpu, err := nvidiatest.New(hopperReport(t), nvidiatest.Validity{NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	dir = t.TempDir()
	roots := filepath.Join(dir, "gpu-roots.pem")
	os.WriteFile(roots, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: gpu.Root.Raw}), 0o600)
	data := t.TempDir()
	cfg, url := kbsConfig(t, data, "http", extra+"[attestation_service.verifiers]\ncca_store_dir = \""+
		filepath.Join(testutil.Fixtures(t), ccaData, "conf")+"\"\nnvidia_roots = \""+roots+"\"\n")
	return startKBS(t, cfg, url, data, nil), url, gpu, dir
}
