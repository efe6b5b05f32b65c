package tdx

import (
	"bytes"
	"context"
	"crypto"
	"encoding/base64"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"

	vtdx "github.com/cocoon-cc/cocoon/attestation/verifier/tdx"
	"github.com/cocoon-cc/cocoon/guest/aa"
	"github.com/cocoon-cc/cocoon/guest/attester/tsm"
	"github.com/cocoon-cc/cocoon/guest/attester/tsm/tsmtest"
	"github.com/cocoon-cc/cocoon/internal/testutil"
)

func fixture(t *testing.T, name string) []byte {
	b, err := os.ReadFile(filepath.Join(testutil.Fixtures(t), "trustee/deps/verifier/test_data", name))
	if err != nil {
		t.Skip("no Trustee fixtures:", err)
	}
	return b
}

// guest is a fake guest root: a configfs-tsm kernel double serving the
// real quote, and the given CCEL and AAEL files.
func guest(t *testing.T, ccel []byte, events ...aa.Event) (*Attester, string, *[]byte) {
	quote := fixture(t, "tdx_quote_4.dat")
	root := t.TempDir()
	var gotIn []byte
	k := tsmtest.New(t, "tdx_guest", func(in []byte, _ string) ([]byte, []byte) { gotIn = in; return quote, nil })
	if ccel != nil {
		write(t, filepath.Join(root, CCELPath), ccel)
	}
	aael := filepath.Join(root, "run/attestation-agent/eventlog")
	var log []byte
	for _, e := range events {
		r, err := aa.EncodeRecord(e, 4, crypto.SHA384)
		if err != nil {
			t.Fatal(err)
		}
		log = append(log, r.Bytes...)
	}
	if events != nil {
		write(t, aael, log)
	}
	return New(Options{Root: root, AAELPath: aael, TSM: &tsm.Client{Root: k.Root, Mkdir: k.Mkdir}}), root, &gotIn
}

func write(t *testing.T, path string, data []byte) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

type evidence struct {
	Quote      string  `json:"quote"`
	CCEventLog *string `json:"cc_eventlog"`
}

func parse(t *testing.T, raw []byte) (*vtdx.Quote, *vtdx.EventLog) {
	t.Helper()
	var ev evidence
	if err := json.Unmarshal(raw, &ev); err != nil {
		t.Fatal(err)
	}
	q, err := base64.StdEncoding.DecodeString(ev.Quote)
	if err != nil {
		t.Fatal(err)
	}
	quote, err := vtdx.ParseQuote(q)
	if err != nil {
		t.Fatal(err)
	}
	if ev.CCEventLog == nil {
		return quote, nil
	}
	l, err := base64.StdEncoding.DecodeString(*ev.CCEventLog)
	if err != nil {
		t.Fatal(err)
	}
	log, err := vtdx.ParseEventLog(l)
	if err != nil {
		t.Fatalf("cc_eventlog does not parse: %v", err)
	}
	return quote, log
}

func TestEvidenceWithCCELAndAAEL(t *testing.T) {
	ccel := fixture(t, "CCEL_data")
	want := aa.Event{Domain: "github.com/cocoon", Operation: "pull-image", Content: "busybox"}
	a, _, gotIn := guest(t, ccel, want)
	rd := bytes.Repeat([]byte{7}, 48)
	raw, err := a.Evidence(context.Background(), rd)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(*gotIn, append(bytes.Clone(rd), make([]byte, 16)...)) {
		t.Fatalf("inblob %x", *gotIn)
	}
	_, log := parse(t, raw)
	firmware, err := vtdx.ParseEventLog(ccel)
	if err != nil {
		t.Fatal(err)
	}
	if len(log.Events) != len(firmware.Events)+1 {
		t.Fatalf("%d events, want the CCEL's %d and one AAEL record", len(log.Events), len(firmware.Events))
	}
	last := log.Events[len(log.Events)-1]
	if last.Index != 4 || last.Type != 6 || string(last.Data[8:]) != want.String() || !last.DigestMatchesEvent {
		t.Fatalf("AAEL record parsed as %+v", last)
	}
}

func TestEvidenceWithoutEventLogs(t *testing.T) {
	a, _, _ := guest(t, nil)
	raw, err := a.Evidence(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, log := parse(t, raw); log != nil || !bytes.Contains(raw, []byte(`"cc_eventlog":null`)) {
		t.Fatalf("evidence %s, want a null cc_eventlog", raw)
	}
}

func TestEvidenceAAELOnly(t *testing.T) {
	a, _, _ := guest(t, nil, aa.Event{Domain: "d", Operation: "o", Content: "c"})
	raw, err := a.Evidence(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, log := parse(t, raw); len(log.Events) != 1 {
		t.Fatalf("events %+v", log)
	}
}

func TestRuntimeRegisters(t *testing.T) {
	a, root, _ := guest(t, nil)
	if _, _, err := a.RuntimeRegister(17); !errors.Is(err, errors.ErrUnsupported) {
		t.Fatalf("without sysfs: %v, want ErrUnsupported", err)
	}
	m := filepath.Join(root, MeasurementsPath)
	for _, f := range []string{"rtmr2:sha384", "rtmr3:sha384"} {
		write(t, filepath.Join(m, f), nil)
	}
	for pcr, want := range map[uint64]uint32{1: 1, 7: 1, 4: 2, 9: 3, 17: 4, 23: 4} {
		if got, h, err := a.RuntimeRegister(pcr); err != nil || got != want || h != crypto.SHA384 {
			t.Errorf("PCR %d -> MR %d %v %v, want %d", pcr, got, h, err, want)
		}
	}
	d := bytes.Repeat([]byte{9}, 48)
	if err := a.ExtendRuntimeRegister(context.Background(), 17, d); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(filepath.Join(m, "rtmr3:sha384")); !bytes.Equal(got, d) {
		t.Fatalf("RTMR3 got %x", got)
	}
	if err := a.ExtendRuntimeRegister(context.Background(), 17, d[:32]); err == nil {
		t.Fatal("short digest accepted")
	}
}

func TestBindInitData(t *testing.T) {
	a, root, _ := guest(t, nil)
	q, err := vtdx.ParseQuote(fixture(t, "tdx_quote_4.dat"))
	if err != nil {
		t.Fatal(err)
	}
	// Without sysfs, MRCONFIGID comes from a quote.
	if err := a.BindInitData(context.Background(), q.Body.MrConfigID[:]); err != nil {
		t.Fatalf("quoted MRCONFIGID refused: %v", err)
	}
	digest := bytes.Repeat([]byte{5}, 32)
	write(t, filepath.Join(root, MeasurementsPath, "mrconfigid"), append(bytes.Clone(digest), make([]byte, 16)...))
	if err := a.BindInitData(context.Background(), digest); err != nil {
		t.Fatalf("padded digest refused: %v", err)
	}
	if err := a.BindInitData(context.Background(), bytes.Repeat([]byte{6}, 32)); !errors.Is(err, ErrMRConfigID) {
		t.Fatalf("other digest: %v", err)
	}
}

func TestTrimCCELRejectsGarbage(t *testing.T) {
	for _, b := range [][]byte{nil, {1, 2, 3}, bytes.Repeat([]byte{0x41}, 64)} {
		if _, err := TrimCCEL(b); err == nil {
			t.Errorf("TrimCCEL(%x) accepted", b)
		}
	}
}

func FuzzTrimCCEL(f *testing.F) {
	f.Add(SpecIDEvent())
	f.Fuzz(func(t *testing.T, b []byte) {
		out, err := TrimCCEL(b)
		if err == nil && !bytes.HasPrefix(b, out) {
			t.Fatal("trimmed log is not a prefix")
		}
	})
}
