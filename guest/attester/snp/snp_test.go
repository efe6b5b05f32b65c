package snp

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-sev-guest/abi"
	"github.com/google/uuid"

	vsnp "github.com/cocoon-cc/cocoon/attestation/verifier/snp"
	"github.com/cocoon-cc/cocoon/guest/attester/tsm"
	"github.com/cocoon-cc/cocoon/guest/attester/tsm/tsmtest"
	"github.com/cocoon-cc/cocoon/internal/testutil"
)

// fixture is a real SNP report and VCEK from Trustee's verifier tests.
func fixture(t *testing.T) (report, vcek []byte) {
	dir := filepath.Join(testutil.Fixtures(t), "trustee/deps/verifier/test_data/snp")
	report, err := os.ReadFile(filepath.Join(dir, "test-report.bin"))
	if err != nil {
		t.Skip("no Trustee fixtures:", err)
	}
	vcek, err = os.ReadFile(filepath.Join(dir, "test-vcek.der"))
	if err != nil {
		t.Fatal(err)
	}
	return report, vcek
}

// kernel serves the fixture report through a fake configfs-tsm and records
// what the attester asked for.
func kernel(t *testing.T, report, vcek []byte) (*Attester, *[]byte, *string) {
	table := (&abi.CertTable{Entries: []abi.CertTableEntry{
		{GUID: uuid.MustParse(abi.VcekGUID), RawCert: vcek},
		{GUID: uuid.MustParse(abi.ArkGUID), RawCert: []byte("ark")},
	}}).Marshal()
	var gotIn []byte
	var gotPriv string
	k := tsmtest.New(t, "sev_guest", func(in []byte, priv string) ([]byte, []byte) {
		gotIn, gotPriv = in, priv
		return report, table
	})
	return New(Options{Root: t.TempDir(), TSM: &tsm.Client{Root: k.Root, Mkdir: k.Mkdir}}), &gotIn, &gotPriv
}

func TestEvidenceThroughConfigfsTSM(t *testing.T) {
	report, vcek := fixture(t)
	a, gotIn, gotPriv := kernel(t, report, vcek)
	rd := bytes.Repeat([]byte{0xab}, 48)
	ev, err := a.Evidence(context.Background(), rd)
	if err != nil {
		t.Fatal(err)
	}
	if want := append(append([]byte{}, rd...), make([]byte, 16)...); !bytes.Equal(*gotIn, want) || *gotPriv != "0" {
		t.Fatalf("inblob %x privlevel %q, want the report data zero-padded at VMPL 0", *gotIn, *gotPriv)
	}
	parsed, err := vsnp.ParseEvidence(ev)
	if err != nil {
		t.Fatalf("evidence does not parse: %v\n%s", err, ev)
	}
	if !bytes.Equal(parsed.Report.Bytes(), report[:abi.ReportSize]) {
		t.Fatal("the report does not round-trip")
	}
	if !bytes.Equal(parsed.Certs.VCEK, vcek) || string(parsed.Certs.ARK) != "ark" || parsed.Certs.ASK != nil {
		t.Fatalf("certificate table not carried: %+v", parsed.Certs)
	}
}

func TestEvidenceRefusesLongReportData(t *testing.T) {
	report, vcek := fixture(t)
	a, _, _ := kernel(t, report, vcek)
	if _, err := a.Evidence(context.Background(), make([]byte, 65)); err == nil {
		t.Fatal("65 bytes of report data accepted")
	}
}

func TestBindInitDataChecksHostData(t *testing.T) {
	report, vcek := fixture(t)
	a, _, _ := kernel(t, report, vcek)
	r, err := vsnp.ParseReport(report[:abi.ReportSize])
	if err != nil {
		t.Fatal(err)
	}
	host := r.Proto().GetHostData()
	if err := a.BindInitData(context.Background(), host); err != nil {
		t.Fatalf("HOST_DATA itself refused: %v", err)
	}
	other := bytes.Clone(host)
	other[0] ^= 1
	if err := a.BindInitData(context.Background(), other); !errors.Is(err, ErrHostData) {
		t.Fatalf("other digest: %v, want ErrHostData", err)
	}
}

func TestWrongProvider(t *testing.T) {
	report, _ := fixture(t)
	k := tsmtest.New(t, "tdx_guest", func([]byte, string) ([]byte, []byte) { return report, nil })
	a := New(Options{TSM: &tsm.Client{Root: k.Root, Mkdir: k.Mkdir}})
	if _, err := a.Evidence(context.Background(), nil); !errors.Is(err, tsm.ErrProvider) {
		t.Fatalf("tdx_guest provider: %v, want ErrProvider", err)
	}
}

func TestNoTEE(t *testing.T) {
	a := New(Options{Root: t.TempDir()})
	if _, err := a.Evidence(context.Background(), nil); err == nil {
		t.Fatal("evidence without configfs-tsm or /dev/sev-guest")
	}
}
