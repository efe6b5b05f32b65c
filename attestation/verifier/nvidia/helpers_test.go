package nvidia_test

import (
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cocoon-cc/cocoon/attestation/verifier/nvidia"
	"github.com/cocoon-cc/cocoon/internal/testutil"
)

// nvData is Trustee's NVIDIA test data: a Hopper GPU's measurement report
// answering nonce fixtureNonce, its certificate chain (case 1) and broken
// chains (cases 2-4), and the claims Trustee derives.
const nvData = "deps/verifier/test_data/nvidia/"

const fixtureNonce = "931d8dd0add203ac3d8b4fbde75e115278eefcdceac5b87671a748f32364dfcb"

func fixture(t testing.TB, rel string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(testutil.Fixtures(t), "trustee", rel))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// fixtureDevice is the device evidence as an attester sends it, with the
// chain of the given case.
func fixtureDevice(t testing.TB, chainCase string) nvidia.Device {
	return nvidia.Device{
		Arch:        "HOPPER",
		UUID:        "1111-2222-33333-444444-555555",
		Evidence:    strings.TrimSpace(string(fixture(t, nvData+"hopperAttestationReport.txt"))),
		Certificate: base64.StdEncoding.EncodeToString(fixture(t, nvData+"hopper_cert_chain_case"+chainCase+".txt")),
	}
}

func evidenceJSON(t testing.TB, d ...nvidia.Device) []byte {
	b, err := json.Marshal(nvidia.Evidence{Devices: d})
	if err != nil {
		t.Fatal(err)
	}
	return b
}
