package csv

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/cocoon-cc/cocoon/attestation/verifier/csv/csvtest"

	"github.com/cocoon-cc/cocoon/attestation/verifier"
)

// Trustee's evidence from a Hygon machine (a version 1 report) carries the
// PEK only; its HSK and CEK come from Hygon's KDS, which tests cannot
// reach. What it proves offline: the report parses as Trustee parses it,
// its SM2 signature verifies with the real PEK, and the signer block names
// that PEK and serial number.
func TestFixtureReport(t *testing.T) {
	ev, err := ParseEvidence(readFixture(t))
	if err != nil {
		t.Fatal(err)
	}
	pek, err := parseCSVCert(ev.PEK)
	if err != nil {
		t.Fatal(err)
	}
	if err := checkReport(pek, ev, verifier.Expected{ReportData: make([]byte, 48)}); err != nil {
		t.Fatalf("genuine report: %v", err)
	}
	c := Claims(ev)
	want := map[string]any{
		"version": "1", "serial_number": "KPA64911240507", "anonce": "26d7c75d",
		"sig_usage": "02100000", "sig_algo": "04000000",
		"measure":     "ae2a2cf1f41a485fa37bf9ae92f678783c59fbc79de7b5d237743d58f5538034",
		"mnonce":      "ad998a845c45cf30944d1c285629e768",
		"report_data": strings.Repeat("00", 64), "vm_id": strings.Repeat("00", 16),
	}
	for k, w := range want {
		if c[k] != w {
			t.Errorf("%s = %v, want %v", k, c[k], w)
		}
	}
	pol := c["policy"].(map[string]any)
	if pol["nodbg"] != 1 || pol["es"] != 1 || pol["csv3"] != 1 || pol["noks"] != 0 {
		t.Errorf("policy = %v", pol)
	}
	if err := checkReport(pek, ev, expect(binding("another nonce"))); !errors.Is(err, verifier.ErrReportDataMismatch) {
		t.Errorf("wrong nonce: %v", err)
	}

	// Offline with no HSK/CEK for the chip there is nothing to chain to.
	v, err := New(Options{DisableKDS: true, CertDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.Evaluate(ctx, readFixture(t), verifier.Expected{}); !errors.Is(err, ErrNoHSKCEK) {
		t.Errorf("no HSK/CEK: %v", err)
	}
	// Another chain's HSK is not signed by Hygon's HRK.
	dir := t.TempDir()
	p := csvtest.New(t)
	writeFile(t, hskCEKPath(dir, "KPA64911240507"), append(p.HSKCert, p.CEKCert...))
	v, _ = New(Options{DisableKDS: true, CertDir: dir})
	if _, err := v.Evaluate(ctx, readFixture(t), verifier.Expected{}); !errors.Is(err, ErrHSKSignature) {
		t.Errorf("foreign HSK: %v", err)
	}
}

// Every byte the PEK signs in the real report, and every byte of its
// signature, is refused when flipped; so is any change of the PEK or the
// serial number the evidence names.
func TestFixtureTamper(t *testing.T) {
	ev, err := ParseEvidence(readFixture(t))
	if err != nil {
		t.Fatal(err)
	}
	pek, _ := parseCSVCert(ev.PEK)
	r := ev.Report
	for i := range 192 + sigSize {
		if i >= signedV1 && i < 192 {
			continue // sig_usage, sig_algo, anonce: outside the signature (below)
		}
		d := append([]byte(nil), r.raw...)
		d[i] ^= 0x01
		tr, _ := ParseReport(make([]byte, 16), 0, d)
		if err := checkReport(pek, &Evidence{Report: tr, PEK: ev.PEK, Serial: ev.Serial}, verifier.Expected{}); !errors.Is(err, ErrReportSignature) {
			t.Fatalf("byte %d flipped: %v", i, err)
		}
	}
	// The unsigned words: usage and algorithm are checked, the anonce is
	// pinned by the report data's zero padding.
	for _, i := range []int{180, 184, 188} {
		d := append([]byte(nil), r.raw...)
		d[i] ^= 0x01
		tr, _ := ParseReport(make([]byte, 16), 0, d)
		err := checkReport(pek, &Evidence{Report: tr, PEK: ev.PEK, Serial: ev.Serial}, verifier.Expected{ReportData: make([]byte, 48)})
		if !errors.Is(err, ErrCertUsage) && !errors.Is(err, verifier.ErrReportDataMismatch) {
			t.Fatalf("byte %d flipped: %v", i, err)
		}
	}
	serial := append([]byte(nil), ev.Serial...)
	serial[0] ^= 1
	if err := checkReport(pek, &Evidence{Report: r, PEK: ev.PEK, Serial: serial}, verifier.Expected{}); !errors.Is(err, ErrSignerMismatch) {
		t.Errorf("serial changed: %v", err)
	}
	other := csvtest.New(t)
	otherPEK, _ := parseCSVCert(other.PEKCert)
	if err := checkReport(otherPEK, &Evidence{Report: r, PEK: other.PEKCert, Serial: ev.Serial}, verifier.Expected{}); !errors.Is(err, ErrReportSignature) {
		t.Errorf("another PEK: %v", err)
	}
}

func TestVerify(t *testing.T) {
	p := csvtest.New(t)
	v := testVerifier(t, p, Options{})
	rd := binding("nonce")
	for _, version := range []int{1, 2} {
		claims, err := v.Evaluate(ctx, p.Evidence(t, version, rd, true), expect(rd))
		if err != nil {
			t.Fatalf("v%d: %v", version, err)
		}
		c := claims[0].Claims
		if claims[0].Class != "cpu" || c["report_data"] != hexPad(rd) || c["serial_number"] != testSerial ||
			c["measure"] != hex.EncodeToString(p.Measure) {
			t.Errorf("v%d claims: %v", version, c)
		}
		if version == 2 && (c["build"] != 2024 || c["rtmr_version"] != 1 || c["version"] != "2" ||
			c["rtmr0"] != hex.EncodeToString(p.Measure) || len(c["uefi_event_logs"].([]any)) != 4) {
			t.Errorf("v2 claims: %v", c)
		}
		if pol := c["policy"].(map[string]any); pol["nodbg"] != 1 || pol["es"] != 1 || pol["csv3"] != 1 {
			t.Errorf("v%d policy %v", version, pol)
		}
		if _, err := v.Evaluate(ctx, p.Evidence(t, version, binding("old nonce"), true), expect(rd)); !errors.Is(err, verifier.ErrReportDataMismatch) {
			t.Errorf("v%d wrong nonce: %v", version, err)
		}
	}
}

func hexPad(rd []byte) string { return hex.EncodeToString(verifier.Fit(rd, 64)) }

// One error per link of the chain.
func TestChainErrors(t *testing.T) {
	p, q := csvtest.New(t), csvtest.New(t)
	v := testVerifier(t, p, Options{})
	rd := binding("n")
	for _, c := range []struct {
		name     string
		hsk, cek []byte
		pek      []byte
		want     error
	}{
		{"HSK of another root", q.HSKCert, p.CEKCert, p.PEKCert, ErrHSKSignature},
		{"CEK of another HSK", p.HSKCert, q.CEKCert, p.PEKCert, ErrCEKSignature},
		{"PEK of another chip", p.HSKCert, caSwap(t, p, q), p.PEKCert, ErrPEKSignature},
		{"HRK as HSK", p.HRKCert, p.CEKCert, p.PEKCert, ErrCertUsage},
		{"PEK as CEK", p.HSKCert, p.PEKCert, p.PEKCert, ErrCertUsage},
		{"CEK as PEK", p.HSKCert, p.CEKCert, p.CEKCert, ErrCertUsage},
		{"short HSK", p.HSKCert[:100], p.CEKCert, p.PEKCert, ErrCertificate},
	} {
		_, err := v.verifyChain(c.hsk, c.cek, c.pek)
		if !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
		}
	}
	// A root that is not a self-signed HRK is refused up front.
	if _, err := New(Options{HRK: p.HSKCert}); !errors.Is(err, ErrCertUsage) {
		t.Errorf("HSK as root: %v", err)
	}
	bad := append([]byte(nil), p.HRKCert...)
	bad[100] ^= 1
	if _, err := New(Options{HRK: bad}); !errors.Is(err, ErrUntrustedRoot) {
		t.Errorf("broken root: %v", err)
	}
	// The real HRK does not accept the test chain.
	real, err := New(Options{DisableKDS: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := real.Evaluate(ctx, p.Evidence(t, 2, rd, true), expect(rd)); !errors.Is(err, ErrHSKSignature) {
		t.Errorf("test chain under Hygon's HRK: %v", err)
	}
}

// caSwap is a CEK the right HSK signed, but for another chip: q's CEK key
// re-signed by p's HSK.
func caSwap(t *testing.T, p, q *csvtest.PKI) []byte {
	return csvtest.CSVCert(t, q.CEK, usageCEK, map[uint32]*csvtest.Key{csvtest.UsageHSK: p.HSK})
}

// Every byte of the certificates' signed bodies and signatures, and of the
// report's signed region and signature, is refused when flipped.
func TestTamper(t *testing.T) {
	p := csvtest.New(t)
	rd := binding("n")
	report := p.Report(t, 2, rd)
	v := testVerifier(t, p, Options{})
	ev, err := ParseEvidence(p.EvidenceOf(t, 2, report, true))
	if err != nil {
		t.Fatal(err)
	}
	check := func(name string, i int, e *Evidence) {
		t.Helper()
		v.valid = verifier.NewCache[[sha256.Size]byte, *csvCert](1) // verify every chain again
		if _, err := v.Verify(ctx, e, expect(rd)); err == nil {
			t.Fatalf("%s byte %d flipped: accepted", name, i)
		}
	}
	flip := func(b []byte, i int) []byte {
		c := append([]byte(nil), b...)
		c[i] ^= 0x80
		return c
	}
	for i := range caBodySize + sigSize {
		e := *ev
		e.HSK = flip(ev.HSK, i)
		check("HSK", i, &e)
	}
	for _, part := range []struct {
		name string
		get  func(*Evidence) *[]byte
	}{{"CEK", func(e *Evidence) *[]byte { return &e.CEK }}, {"PEK", func(e *Evidence) *[]byte { return &e.PEK }}} {
		for i := range csvBodySize + 8 + sigSize {
			e := *ev
			*part.get(&e) = flip(*part.get(ev), i)
			check(part.name, i, &e)
		}
	}
	for i := range signedV2 + sigSize {
		r, _ := ParseReport(csvtest.ExtMagic, 1, flip(report, i))
		e := *ev
		e.Report = r
		check("report", i, &e)
	}
}

func TestCertDirAndKDS(t *testing.T) {
	p := csvtest.New(t)
	rd := binding("n")
	ev := p.Evidence(t, 1, rd, false)
	pair := p.HSKCEK()

	dir := t.TempDir()
	writeFile(t, hskCEKPath(dir, testSerial), pair)
	if _, err := testVerifier(t, p, Options{CertDir: dir}).Evaluate(ctx, ev, expect(rd)); err != nil {
		t.Errorf("Trustee's offline layout: %v", err)
	}
	flat := t.TempDir()
	writeFile(t, filepath.Join(flat, "hsk_cek.cert"), pair)
	if _, err := testVerifier(t, p, Options{CertDir: flat}).Evaluate(ctx, ev, expect(rd)); err != nil {
		t.Errorf("flat directory: %v", err)
	}
	short := t.TempDir()
	writeFile(t, filepath.Join(short, "hsk_cek.cert"), pair[:100])
	if _, err := testVerifier(t, p, Options{CertDir: short}).Evaluate(ctx, ev, expect(rd)); !errors.Is(err, ErrCertificate) {
		t.Errorf("truncated pair: %v", err)
	}

	var hits atomic.Int32
	kds := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		if r.URL.Query().Get("snumber") != testSerial {
			http.NotFound(w, r)
			return
		}
		w.Write(pair)
	}))
	t.Cleanup(kds.Close)
	cache := t.TempDir()
	v := testVerifier(t, p, Options{KDSURL: kds.URL + "/hsk_cek?snumber=", CacheDir: cache})
	for range 2 {
		if _, err := v.Evaluate(ctx, ev, expect(rd)); err != nil {
			t.Fatalf("from the KDS: %v", err)
		}
	}
	if hits.Load() != 1 {
		t.Errorf("%d KDS requests, want 1", hits.Load())
	}
	if b, err := os.ReadFile(hskCEKPath(cache, testSerial)); err != nil || string(b) != string(pair) {
		t.Errorf("cache: %v", err)
	}
	// A fresh verifier on the cache directory needs no KDS.
	if _, err := testVerifier(t, p, Options{KDSURL: "http://127.0.0.1:1/", CacheDir: cache}).Evaluate(ctx, ev, expect(rd)); err != nil {
		t.Errorf("from the cache directory: %v", err)
	}
	// A chip the KDS does not know.
	other := strings.Replace(string(ev), `[72,71,84`, `[72,71,85`, 1)
	v = testVerifier(t, p, Options{KDSURL: kds.URL + "/hsk_cek?snumber="})
	if _, err := v.Evaluate(ctx, []byte(other), expect(rd)); !errors.Is(err, ErrKDS) {
		t.Errorf("unknown chip: %v", err)
	}
}

// A serial number that would name another file or URL is refused before
// any lookup.
func TestChipIDValidated(t *testing.T) {
	for _, s := range []string{"", "../../etc", "a/b", "x?y=1", "KPA 1", strings.Repeat("A", 65)} {
		if validChipID(s) {
			t.Errorf("%q accepted", s)
		}
	}
	if !validChipID("KPA64911240507") {
		t.Error("a real serial number refused")
	}
}

func TestParseErrors(t *testing.T) {
	p := csvtest.New(t)
	good := string(p.Evidence(t, 2, nil, true))
	for name, ev := range map[string]string{
		"not JSON":        "{",
		"no report":       `{"cert_chain":{},"serial_number":[]}`,
		"short data":      strings.Replace(good, `"data":[`, `"data":[1,`, 1),
		"bad magic":       strings.Replace(good, `"magic":[65,84`, `"magic":[66,84`, 1),
		"bad flags":       strings.Replace(good, `"flags":1`, `"flags":2`, 1),
		"byte over 255":   strings.Replace(good, `"data":[`, `"data":[256,`, 1),
		"negative byte":   strings.Replace(good, `"data":[`, `"data":[-1,`, 1),
		"string as bytes": strings.Replace(good, `"serial_number":[`, `"serial_number":"x",[`, 1),
		"bad eventlog":    strings.Replace(good, `"serial_number"`, `"cc_eventlog":"%%","serial_number"`, 1),
		"one signature":   strings.Replace(good, `"sigs":[{`, `"sigs":[{"usage":1}],"x":[{`, 1),
	} {
		if _, err := ParseEvidence([]byte(ev)); !errors.Is(err, verifier.ErrMalformedEvidence) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// A version 2 report's event log must replay to its RTMR1-4.
func TestEventLog(t *testing.T) {
	p := csvtest.New(t)
	v := testVerifier(t, p, Options{})
	rd := binding("n")
	report := p.Report(t, 2, rd)
	good := p.EventLog
	for i, tamper := range []func([]byte) []byte{
		func(b []byte) []byte { b[len(b)-len("runtime")-5] ^= 1; return b },       // the last event's SM3 digest
		func(b []byte) []byte { return b[:len(b)-(4+4+4+2+32+4+len("runtime"))] }, // the last event dropped
		func(b []byte) []byte { return b[:10] },                                   // no log at all
	} {
		p.EventLog = tamper(append([]byte(nil), good...))
		_, err := v.Evaluate(ctx, p.EvidenceOf(t, 2, report, true), expect(rd))
		if !errors.Is(err, ErrEventLog) {
			t.Errorf("tampered log %d: %v", i, err)
		}
	}
	p.EventLog = good
	if _, err := v.Evaluate(ctx, p.EvidenceOf(t, 2, report, true), expect(rd)); err != nil {
		t.Errorf("genuine log: %v", err)
	}
}
