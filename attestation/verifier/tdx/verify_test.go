package tdx

import (
	"context"
	"crypto/sha512"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	tdxtesting "github.com/google/go-tdx-guest/testing"
	tdxverify "github.com/google/go-tdx-guest/verify"

	"github.com/cocoon-cc/cocoon/attestation/verifier"
	"github.com/cocoon-cc/cocoon/attestation/verifier/dcap"
	"github.com/cocoon-cc/cocoon/attestation/verifier/dcap/dcaptest"
)

// TestEvaluateSampleViaPCCS runs the full DCAP verification of a real
// quote with real collateral served by a local PCCS.
func TestEvaluateSampleViaPCCS(t *testing.T) {
	srv := newPCCS(t)
	v, err := New(Options{CollateralURL: srv.URL, Now: func() time.Time { return sampleTime }})
	if err != nil {
		t.Fatal(err)
	}
	claims, err := evaluate(t, v, sampleQuote(t), nil, verifier.Expected{})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"tcb_status":                   "UpToDate",
		"tcb_date":                     "2023-02-15T00:00:00Z",
		"advisory_ids":                 []any{},
		"collateral_expiration_status": "0",
		"earliest_issue_date":          "2018-05-21T10:45:10Z", // Intel SGX Root CA
		"latest_issue_date":            "2023-06-18T08:42:58Z", // TCB info
		"earliest_expiration_date":     "2023-07-08T07:24:59Z", // QE identity
		"pck_crl_num":                  1.0,
		"root_ca_crl_num":              1.0,
		"tcb_eval_num":                 15.0,
		"sgx_type":                     "Scalable",
		"is_dynamic_platform":          true,
		"is_cached_keys":               true,
		"is_smt_enabled":               true,
		"platform_provider_id":         "df4c32a9d8d86009aaf380ec43cfcefb",
		"root_key_id":                  "46e403bd34f05a3f2817ab9badcaacc7ffc98e0f261008cd30dae936cace18d5dcf58eef31463613de1570d516200993",
		// As Trustee's own test of this quote expects.
		"platform_instance_id": "82548d228d94d5e204a95b354dc61a02",
	}
	got := jsonValue(t, claims).(map[string]any)
	for k, w := range want {
		if !reflect.DeepEqual(got[k], w) {
			t.Errorf("%s = %#v, want %#v", k, got[k], w)
		}
	}
	// The evidence claims are exactly Trustee's (see TestQuoteClaimsMatchTrustee).
	if got["quote"].(map[string]any)["body"].(map[string]any)["mr_td"] != "705ee9381b8633a9fbe532b52345e8433343d2868959f57889d84ca377c395b689cac1599ccea1b7d420483a9ce5f031" {
		t.Errorf("quote.body.mr_td = %v", got["quote"].(map[string]any)["body"].(map[string]any)["mr_td"])
	}
	if n := srv.requests.Load(); n != 4 {
		t.Errorf("%d collateral requests, want 4", n)
	}
	// go-tdx-guest's SPR quote is of the same FMSPC and PCK CA: its chain
	// and signatures verify with the cached collateral, its TCB is too old.
	if _, err := evaluate(t, v, sprQuote(t), nil, verifier.Expected{}); !errors.Is(err, dcap.ErrTCBNotSupported) {
		t.Errorf("SPR quote: %v, want dcap.ErrTCBNotSupported", err)
	}
	if n := srv.requests.Load(); n != 4 {
		t.Errorf("%d collateral requests after a second quote, want 4 (cached)", n)
	}
}

// TestAgreesWithGoTDXGuest: go-tdx-guest's reference verification accepts
// and rejects the same real quotes with the same collateral.
func TestAgreesWithGoTDXGuest(t *testing.T) {
	v := sampleVerifier(t)
	roots := x509.NewCertPool()
	roots.AddCert(dcap.IntelRootCA())
	opts := &tdxverify.Options{GetCollateral: true, CheckRevocations: true, Getter: tdxtesting.TestGetter, TrustedRoots: roots,
		Now: &tdxverify.TimeSet{PckCertChain: sampleTime, TcbInfo: sampleTime, QeIdentity: sampleTime, PckCrl: sampleTime, RootCaCrl: sampleTime}}
	for name, raw := range map[string][]byte{"tdx_quote_4": sampleQuote(t), "SPR": sprQuote(t)} {
		_, err := evaluate(t, v, raw, nil, verifier.Expected{})
		ref := tdxverify.RawTdxQuote(raw, opts)
		if (err == nil) != (ref == nil) {
			t.Errorf("%s: this package says %v, go-tdx-guest says %v", name, err, ref)
		}
	}
}

// recordingGetter serves the sample responses for Intel PCS URLs and
// records what was asked.
type recordingGetter struct {
	mu   sync.Mutex
	urls []string
}

func (g *recordingGetter) Get(_ context.Context, u string) (http.Header, []byte, error) {
	g.mu.Lock()
	g.urls = append(g.urls, u)
	g.mu.Unlock()
	parsed, err := url.Parse(u)
	if err != nil {
		return nil, nil, err
	}
	key := parsed.RequestURI()
	if parsed.Host == "certificates.trustedservices.intel.com" {
		key = "/sgx/certification/v4/rootcacrl"
	}
	resp, ok := sampleResponses()[key]
	if !ok {
		return nil, nil, errors.New("404 " + u)
	}
	return resp.header, resp.body, nil
}

// TestIntelPCSURLs checks what is fetched from Intel PCS by default.
func TestIntelPCSURLs(t *testing.T) {
	g := &recordingGetter{}
	v, err := New(Options{Getter: g, Now: func() time.Time { return sampleTime }})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := evaluate(t, v, sampleQuote(t), nil, verifier.Expected{}); err != nil {
		t.Fatal(err)
	}
	want := []string{
		"https://api.trustedservices.intel.com/tdx/certification/v4/tcb?fmspc=50806F000000&update=early",
		"https://api.trustedservices.intel.com/tdx/certification/v4/qe/identity?update=early",
		"https://api.trustedservices.intel.com/sgx/certification/v4/pckcrl?ca=platform&encoding=der",
		"https://certificates.trustedservices.intel.com/IntelSGXRootCA.der",
	}
	if !slices.Equal(g.urls, want) {
		t.Errorf("fetched %q, want %q", g.urls, want)
	}
}

func TestNewRejectsBadOptions(t *testing.T) {
	for _, o := range []Options{{TCBUpdate: "latest"}, {CollateralURL: "ftp://pccs"}, {CollateralURL: "pccs:8081"}} {
		if _, err := New(o); err == nil {
			t.Errorf("New(%+v) succeeded", o)
		}
	}
}

func TestCollateralUnavailable(t *testing.T) {
	v, err := New(Options{CollateralDir: t.TempDir(), Now: func() time.Time { return sampleTime }})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := evaluate(t, v, sampleQuote(t), nil, verifier.Expected{}); !errors.Is(err, dcap.ErrCollateralUnavailable) || !errors.Is(err, verifier.ErrEndorsement) {
		t.Errorf("empty collateral dir: %v, want dcap.ErrCollateralUnavailable", err)
	}
}

// TestVerificationTime moves the clock around the sample's validity.
func TestVerificationTime(t *testing.T) {
	srv := newPCCS(t)
	var mu sync.Mutex
	now := sampleTime
	v, err := New(Options{CollateralURL: srv.URL, Now: func() time.Time { mu.Lock(); defer mu.Unlock(); return now }})
	if err != nil {
		t.Fatal(err)
	}
	set := func(t time.Time) { mu.Lock(); now = t; mu.Unlock() }
	if _, err := evaluate(t, v, sampleQuote(t), nil, verifier.Expected{}); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		when time.Time
		want error
	}{
		{time.Date(2023, 7, 9, 0, 0, 0, 0, time.UTC), dcap.ErrCollateralExpired},  // after the QE identity's nextUpdate
		{time.Date(2023, 6, 10, 0, 0, 0, 0, time.UTC), dcap.ErrCollateralExpired}, // before the TCB info was issued
		{time.Date(2035, 1, 1, 0, 0, 0, 0, time.UTC), dcap.ErrCertificateValidity},
		{time.Date(2022, 1, 1, 0, 0, 0, 0, time.UTC), dcap.ErrCertificateValidity}, // before the PCK certificate
		{time.Date(2031, 1, 1, 0, 0, 0, 0, time.UTC), dcap.ErrCertificateValidity}, // after the PCK certificate
	}
	for _, tc := range tests {
		set(tc.when)
		before := srv.requests.Load()
		if _, err := evaluate(t, v, sampleQuote(t), nil, verifier.Expected{}); !errors.Is(err, tc.want) {
			t.Errorf("at %s: %v, want %v", tc.when, err, tc.want)
		}
		if tc.want == dcap.ErrCollateralExpired && srv.requests.Load() == before {
			t.Errorf("at %s: cached collateral was not refetched", tc.when)
		}
	}
	set(sampleTime)
	if _, err := evaluate(t, v, sampleQuote(t), nil, verifier.Expected{}); err != nil {
		t.Errorf("back at the sample time: %v", err)
	}
}

// TestCollateralMaxAge: collateral is fetched again after CollateralMaxAge
// even while it is valid.
func TestCollateralMaxAge(t *testing.T) {
	srv := newPCCS(t)
	var now atomic.Pointer[time.Time]
	now.Store(&sampleTime)
	v, err := New(Options{CollateralURL: srv.URL, CollateralMaxAge: time.Hour, Now: func() time.Time { return *now.Load() }})
	if err != nil {
		t.Fatal(err)
	}
	for _, step := range []struct {
		after    time.Duration
		requests int64
	}{{0, 4}, {30 * time.Minute, 4}, {2 * time.Hour, 8}, {150 * time.Minute, 8}} {
		at := sampleTime.Add(step.after)
		now.Store(&at)
		if _, err := evaluate(t, v, sampleQuote(t), nil, verifier.Expected{}); err != nil {
			t.Fatal(err)
		}
		if n := srv.requests.Load(); n != step.requests {
			t.Errorf("after %s: %d requests, want %d", step.after, n, step.requests)
		}
	}
}

// TestConcurrentEvaluate: concurrent evaluations of a new platform share
// one collateral fetch.
func TestConcurrentEvaluate(t *testing.T) {
	srv := newPCCS(t)
	v, err := New(Options{CollateralURL: srv.URL, Now: func() time.Time { return sampleTime }})
	if err != nil {
		t.Fatal(err)
	}
	ev := evidenceJSON(sampleQuote(t), nil)
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			if _, err := v.Evaluate(context.Background(), ev, verifier.Expected{}); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if n := srv.requests.Load(); n != 4 {
		t.Errorf("%d collateral requests, want 4", n)
	}
}

func TestBindings(t *testing.T) {
	v := sampleVerifier(t)
	raw := sampleQuote(t)
	q := mustParse(t, raw)
	good := verifier.Expected{ReportData: q.Body.ReportData[:], InitDataDigest: q.Body.MrConfigID[:32]}
	if _, err := evaluate(t, v, raw, nil, good); err != nil {
		t.Fatal(err)
	}
	wrongRD := good
	wrongRD.ReportData = slices.Clone(good.ReportData)
	wrongRD.ReportData[0] ^= 1
	if _, err := evaluate(t, v, raw, nil, wrongRD); !errors.Is(err, verifier.ErrReportDataMismatch) {
		t.Errorf("wrong report data: %v", err)
	}
	wrongInit := good
	wrongInit.InitDataDigest = []byte{1}
	if _, err := evaluate(t, v, raw, nil, wrongInit); !errors.Is(err, verifier.ErrInitDataMismatch) {
		t.Errorf("wrong initdata digest: %v", err)
	}
}

func TestEvaluateRejectsBadEvidence(t *testing.T) {
	v := sampleVerifier(t)
	for _, ev := range []string{`[]`, `{}`, `{"quote":""}`, `{"quote":"***"}`, `{"quote":"AAAA","cc_eventlog":"%%"}`, `{"quote":1}`} {
		if _, err := v.Evaluate(context.Background(), json.RawMessage(ev), verifier.Expected{}); !errors.Is(err, ErrEvidenceEncoding) {
			t.Errorf("%s: %v, want ErrEvidenceEncoding", ev, err)
		}
	}
	// A null or empty log is no log, as in Trustee.
	quote := base64.StdEncoding.EncodeToString(sampleQuote(t))
	for _, log := range []any{nil, ""} {
		ev, _ := json.Marshal(map[string]any{"quote": quote, "cc_eventlog": log})
		if _, err := v.Evaluate(context.Background(), ev, verifier.Expected{}); err != nil {
			t.Errorf("cc_eventlog %q: %v", log, err)
		}
	}
}

// TestTestPKIIsNotTrusted: quotes signed by the test hierarchy fail
// against the default roots.
func TestTestPKIIsNotTrusted(t *testing.T) {
	p := newTestPKI(t, sgxExtensionOf(t, sampleQuote(t)))
	v, err := New(Options{CollateralDir: p.Dir(t, sampleTestCollateral(t)), Now: func() time.Time { return testTime }})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := evaluate(t, v, p.quote(t, sampleQuote(t), nil), nil, verifier.Expected{}); !errors.Is(err, dcap.ErrPCKChain) {
		t.Errorf("test PKI quote against Intel's root: %v, want dcap.ErrPCKChain", err)
	}
}

// TestFullEvidence verifies a consistent quote with the event log it
// commits to, its report data and its initdata digest.
func TestFullEvidence(t *testing.T) {
	p := newTestPKI(t, sgxExtensionOf(t, sampleQuote(t)))
	v := p.verifier(t, p.Dir(t, sampleTestCollateral(t)))
	logData := trusteeData(t, "CCEL_data")
	log, err := ParseEventLog(logData)
	if err != nil {
		t.Fatal(err)
	}
	rtmrs, err := log.ReplayRTMRs()
	if err != nil {
		t.Fatal(err)
	}
	runtimeDigest := sha512.Sum384([]byte(`{"nonce":"n","tee-pubkey":{}}`))
	initDigest := sha512.Sum384([]byte("version = \"0.1.0\"\nalgorithm = \"sha384\"\n"))
	quote := p.quote(t, sampleQuote(t), func(q *Quote) {
		q.Body.RTMR = rtmrs
		q.Body.ReportData = [64]byte(verifier.Fit(runtimeDigest[:], 64))
		q.Body.MrConfigID = initDigest
	})
	want := verifier.Expected{ReportData: runtimeDigest[:], InitDataDigest: initDigest[:]}
	claims, err := evaluate(t, v, quote, logData, want)
	if err != nil {
		t.Fatal(err)
	}
	if events := claims["uefi_event_logs"].([]any); len(events) != 5 {
		t.Errorf("%d events in the claims, want 5", len(events))
	}
	if claims["init_data"] != hex.EncodeToString(initDigest[:]) || claims["tcb_status"] != dcap.StatusUpToDate {
		t.Errorf("init_data %v tcb_status %v", claims["init_data"], claims["tcb_status"])
	}
	// The same quote without its log, with another log, with a wrong binding.
	if _, err := evaluate(t, v, quote, nil, want); err != nil {
		t.Errorf("without the log: %v", err)
	}
	if _, err := evaluate(t, v, quote, goTDXData(t, "ccel/ccel_data.dat"), want); !errors.Is(err, ErrRTMRMismatch) {
		t.Errorf("with another machine's log: %v", err)
	}
	other := sha512.Sum384([]byte("other"))
	if _, err := evaluate(t, v, quote, logData, verifier.Expected{InitDataDigest: other[:]}); !errors.Is(err, verifier.ErrInitDataMismatch) {
		t.Errorf("other initdata: %v", err)
	}
}

// TestRevocation uses test CRLs: no real revoked sample exists.
func TestRevocation(t *testing.T) {
	p := newTestPKI(t, sgxExtensionOf(t, sampleQuote(t)))
	quote := p.quote(t, sampleQuote(t), nil)
	tests := []struct {
		name string
		edit func(*dcaptest.Collateral)
		want error
	}{
		{"PCK certificate on the PCK CRL", func(c *dcaptest.Collateral) { c.PCKRevoked = append(c.PCKRevoked, p.PCK.SerialNumber) }, dcap.ErrPCKRevoked},
		{"PCK CA on the root CA CRL", func(c *dcaptest.Collateral) { c.RootRevoked = append(c.RootRevoked, p.CA.SerialNumber) }, dcap.ErrPCKRevoked},
		{"TCB signing certificate on the root CA CRL", func(c *dcaptest.Collateral) { c.RootRevoked = append(c.RootRevoked, p.TCBSigner.SerialNumber) }, dcap.ErrCollateralSignature},
		{"other serials revoked", func(c *dcaptest.Collateral) { c.PCKRevoked = append(c.PCKRevoked, dcaptest.Serial(t)) }, nil},
	}
	for _, tc := range tests {
		c := sampleTestCollateral(t)
		tc.edit(c)
		_, err := evaluate(t, p.verifier(t, p.Dir(t, c)), quote, nil, verifier.Expected{})
		if !errors.Is(err, tc.want) || (tc.want != nil && !errors.Is(err, verifier.ErrEndorsement)) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
}

// TestCollateralChecks tampers with signed collateral files and contents.
func TestCollateralChecks(t *testing.T) {
	p := newTestPKI(t, sgxExtensionOf(t, sampleQuote(t)))
	quote := p.quote(t, sampleQuote(t), nil)
	tcbFile := "tcb-info-" + sampleFMSPC + ".json"
	tests := []struct {
		name string
		edit func(*dcaptest.Collateral)
		file func(dir string)
		want error
	}{
		{"TCB info for another FMSPC", nil, func(dir string) {
			body := p.SignedBody(t, "tcbInfo", withField(sampleTestCollateral(t).TCBInfo, "fmspc", "00906ED50000"))
			writeFile(t, dir, tcbFile, body)
		}, dcap.ErrTCBInfoMismatch},
		{"TCB info for another PCE", func(c *dcaptest.Collateral) { c.TCBInfo["pceId"] = "0001" }, nil, dcap.ErrTCBInfoMismatch},
		{"TCB info signature", nil, func(dir string) { flipInFile(t, dir, tcbFile, `"signature":"`) }, dcap.ErrCollateralSignature},
		{"QE identity signature", nil, func(dir string) { flipInFile(t, dir, "qe-identity.json", `"signature":"`) }, dcap.ErrCollateralSignature},
		{"TCB info body", nil, func(dir string) { flipInFile(t, dir, tcbFile, `"tcbEvaluationDataNumber":`) }, dcap.ErrCollateralSignature},
		{"issuer chain without signer", nil, func(dir string) { writeFile(t, dir, tcbFile+".issuer-chain", dcaptest.PEMCerts(p.Root)) }, dcap.ErrCollateralSignature},
		{"signer from another root", nil, func(dir string) {
			other := newTestPKI(t, sgxExtensionOf(t, sampleQuote(t)))
			writeFile(t, dir, tcbFile+".issuer-chain", dcaptest.PEMCerts(other.TCBSigner, other.Root))
		}, dcap.ErrCollateralSignature},
		{"PCK CRL from another CA", nil, func(dir string) {
			other := newTestPKI(t, sgxExtensionOf(t, sampleQuote(t)))
			writeFile(t, dir, "pck-crl-platform.der", other.CRL(t, other.CA, other.CAKey, nil, dcaptest.Time))
		}, dcap.ErrCollateralSignature},
		{"garbage root CA CRL", nil, func(dir string) { writeFile(t, dir, "root-ca-crl.der", []byte("not a crl")) }, dcap.ErrCollateralFormat},
		{"TCB info version 2", func(c *dcaptest.Collateral) { c.TCBInfo["version"] = 2 }, nil, dcap.ErrCollateralFormat},
		{"SGX TCB info", func(c *dcaptest.Collateral) { c.TCBInfo["id"] = "SGX" }, nil, dcap.ErrCollateralFormat},
		{"QE identity of the SGX QE", func(c *dcaptest.Collateral) { c.QEIdentity["id"] = "QE" }, nil, dcap.ErrCollateralFormat},
		{"unknown TCB status", func(c *dcaptest.Collateral) { dcaptest.Level(c.TCBInfo, 0)["tcbStatus"] = "Fine" }, nil, dcap.ErrCollateralFormat},
		{"expired TCB info", func(c *dcaptest.Collateral) { c.TCBInfo["nextUpdate"] = testTime.Add(-time.Hour).Format(time.RFC3339) }, nil, dcap.ErrCollateralExpired},
		{"future QE identity", func(c *dcaptest.Collateral) { c.QEIdentity["issueDate"] = testTime.Add(time.Hour).Format(time.RFC3339) }, nil, dcap.ErrCollateralExpired},
	}
	for _, tc := range tests {
		c := sampleTestCollateral(t)
		if tc.edit != nil {
			tc.edit(c)
		}
		dir := p.Dir(t, c)
		if tc.file != nil {
			tc.file(dir)
		}
		if _, err := evaluate(t, p.verifier(t, dir), quote, nil, verifier.Expected{}); !errors.Is(err, tc.want) || !errors.Is(err, verifier.ErrEndorsement) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
}

func withField(doc map[string]any, key string, val any) map[string]any {
	doc[key] = val
	return doc
}

func writeFile(t testing.TB, dir, name string, b []byte) {
	if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// flipInFile changes the character after the first occurrence of marker.
func flipInFile(t testing.TB, dir, name, marker string) {
	b := readFile(t, dir, name)
	i := strings.Index(string(b), marker) + len(marker)
	if b[i] == '1' {
		b[i] = '2'
	} else {
		b[i] = '1'
	}
	writeFile(t, dir, name, b)
}

// TestTCBStatus moves the sample TCB info and QE identity levels around a
// real platform.
func TestTCBStatus(t *testing.T) {
	p := newTestPKI(t, sgxExtensionOf(t, sampleQuote(t)))
	quote := p.quote(t, sampleQuote(t), nil)
	tests := []struct {
		name       string
		edit       func(*dcaptest.Collateral)
		want       string
		advisories []any
		err        error
	}{
		{"up to date", func(*dcaptest.Collateral) {}, dcap.StatusUpToDate, []any{}, nil},
		{"SW hardening", func(c *dcaptest.Collateral) {
			dcaptest.Level(c.TCBInfo, 0)["tcbStatus"] = dcap.StatusSWHardeningNeeded
			dcaptest.Level(c.TCBInfo, 0)["advisoryIDs"] = []any{"INTEL-SA-00615"}
		}, dcap.StatusSWHardeningNeeded, []any{"INTEL-SA-00615"}, nil},
		{"configuration needed", func(c *dcaptest.Collateral) {
			dcaptest.Level(c.TCBInfo, 0)["tcbStatus"] = dcap.StatusConfigurationNeeded
		}, dcap.StatusConfigurationNeeded, []any{}, nil},
		{"PCE SVN below the first level", func(c *dcaptest.Collateral) {
			dcaptest.Level(c.TCBInfo, 0)["tcb"].(map[string]any)["pcesvn"] = 12
		}, dcap.StatusOutOfDate, nil, nil},
		{"TDX module SVN below the first level", func(c *dcaptest.Collateral) {
			dcaptest.SetComponents(dcaptest.Level(c.TCBInfo, 0), "tdxtcbcomponents", []byte{9})
		}, dcap.StatusOutOfDate, nil, nil},
		{"QE out of date", func(c *dcaptest.Collateral) { dcaptest.Level(c.QEIdentity, 0)["tcbStatus"] = dcap.StatusOutOfDate }, dcap.StatusOutOfDate, []any{}, nil},
		{"QE and platform configuration", func(c *dcaptest.Collateral) {
			dcaptest.Level(c.QEIdentity, 0)["tcbStatus"] = "OutOfDate"
			dcaptest.Level(c.TCBInfo, 0)["tcbStatus"] = dcap.StatusConfigurationNeeded
		}, dcap.StatusOutOfDateConfigurationNeeded, []any{}, nil},
		{"platform revoked", func(c *dcaptest.Collateral) { dcaptest.Level(c.TCBInfo, 0)["tcbStatus"] = dcap.StatusRevoked }, "", nil, dcap.ErrTCBRevoked},
		{"QE revoked", func(c *dcaptest.Collateral) { dcaptest.Level(c.QEIdentity, 0)["tcbStatus"] = dcap.StatusRevoked }, "", nil, dcap.ErrTCBRevoked},
		{"no SGX level", func(c *dcaptest.Collateral) {
			for i := range 2 {
				dcaptest.SetComponents(dcaptest.Level(c.TCBInfo, i), "sgxtcbcomponents", []byte{9})
			}
		}, "", nil, dcap.ErrTCBNotSupported},
		{"no TDX level", func(c *dcaptest.Collateral) {
			for i := range 2 {
				dcaptest.SetComponents(dcaptest.Level(c.TCBInfo, i), "tdxtcbcomponents", []byte{9})
			}
		}, "", nil, dcap.ErrTCBNotSupported},
		{"QE below every level", func(c *dcaptest.Collateral) { dcaptest.Level(c.QEIdentity, 0)["tcb"].(map[string]any)["isvsvn"] = 9 }, "", nil, dcap.ErrTCBNotSupported},
		{"QE MRSIGNER", func(c *dcaptest.Collateral) { c.QEIdentity["mrsigner"] = strings.Repeat("AB", 32) }, "", nil, dcap.ErrQEIdentityMismatch},
		{"QE ISVPRODID", func(c *dcaptest.Collateral) { c.QEIdentity["isvprodid"] = 3 }, "", nil, dcap.ErrQEIdentityMismatch},
		{"QE attributes", func(c *dcaptest.Collateral) { c.QEIdentity["attributes"] = "13" + strings.Repeat("00", 15) }, "", nil, dcap.ErrQEIdentityMismatch},
		{"QE MISCSELECT", func(c *dcaptest.Collateral) { c.QEIdentity["miscselect"] = "00000001" }, "", nil, dcap.ErrQEIdentityMismatch},
		{"TDX module signer", func(c *dcaptest.Collateral) {
			c.TCBInfo["tdxModule"].(map[string]any)["mrsigner"] = strings.Repeat("01", 48)
		}, "", nil, ErrTDXModuleMismatch},
	}
	for _, tc := range tests {
		c := sampleTestCollateral(t)
		tc.edit(c)
		claims, err := evaluate(t, p.verifier(t, p.Dir(t, c)), quote, nil, verifier.Expected{})
		if tc.err != nil {
			if !errors.Is(err, tc.err) || !errors.Is(err, verifier.ErrEndorsement) {
				t.Errorf("%s: %v, want %v", tc.name, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if claims["tcb_status"] != tc.want {
			t.Errorf("%s: tcb_status %v, want %v", tc.name, claims["tcb_status"], tc.want)
		}
		if tc.advisories != nil && !reflect.DeepEqual(claims["advisory_ids"], tc.advisories) {
			t.Errorf("%s: advisory_ids %v, want %v", tc.name, claims["advisory_ids"], tc.advisories)
		}
		if tc.advisories == nil && len(claims["advisory_ids"].([]any)) == 0 {
			t.Errorf("%s: the out-of-date level's advisories are missing", tc.name)
		}
	}
}

// TestTDXModuleIdentities uses Trustee's TCB info with TDX module
// identities and its TD 1.5 quote (module major version 1).
func TestTDXModuleIdentities(t *testing.T) {
	base := trusteeData(t, "tdx_quote_5.dat")
	p := newTestPKI(t, sgxExtensionOf(t, base))
	platformSGX := []byte{1, 1, 2, 2, 3, 1, 0, 3}
	collateral := func() *dcaptest.Collateral {
		c := dcaptest.NewCollateral(t, dcap.TDX, trusteeData(t, "tcbInfo.json"), trusteeData(t, "enclaveIdentity.json"), "90C06F000000")
		for i := range 2 {
			dcaptest.SetComponents(dcaptest.Level(c.TCBInfo, i), "sgxtcbcomponents", platformSGX)
		}
		return c
	}
	module := func(c *dcaptest.Collateral, id int) map[string]any {
		return c.TCBInfo["tdxModuleIdentities"].([]any)[id].(map[string]any)
	}
	// TDX_01 is the second identity; its levels are ISVSVN 4 UpToDate, 2 OutOfDate.
	moduleOutOfDate := func(c *dcaptest.Collateral) {
		l := module(c, 1)["tcbLevels"].([]any)[0].(map[string]any)
		l["tcb"].(map[string]any)["isvsvn"] = 6
	}
	tests := []struct {
		name   string
		edit   func(*dcaptest.Collateral)
		mutate func(*Quote)
		want   string
		err    error
	}{
		{"up to date", nil, nil, dcap.StatusUpToDate, nil},
		{"module out of date", moduleOutOfDate, nil, dcap.StatusOutOfDate, nil},
		{"module out of date, platform now runs an up-to-date module", moduleOutOfDate,
			func(q *Quote) { q.Body.TeeTCBSVN2[0] = 6 }, dcap.StatusTDRelaunchAdvised, nil},
		{"relaunch with configuration needed", func(c *dcaptest.Collateral) {
			moduleOutOfDate(c)
			dcaptest.Level(c.TCBInfo, 0)["tcbStatus"] = dcap.StatusConfigurationNeeded
		}, func(q *Quote) { q.Body.TeeTCBSVN2[0] = 6 }, dcap.StatusTDRelaunchAdvisedConfigNeeded, nil},
		{"module revoked", func(c *dcaptest.Collateral) {
			module(c, 1)["tcbLevels"].([]any)[0].(map[string]any)["tcbStatus"] = dcap.StatusRevoked
		}, nil, "", dcap.ErrTCBRevoked},
		{"module below every level", func(c *dcaptest.Collateral) {
			for _, l := range module(c, 1)["tcbLevels"].([]any) {
				l.(map[string]any)["tcb"].(map[string]any)["isvsvn"] = 9
			}
		}, nil, "", dcap.ErrTCBNotSupported},
		{"no identity for the module version", nil, func(q *Quote) { q.Body.TeeTCBSVN[1] = 2 }, "", ErrTDXModuleMismatch},
		{"module signer", func(c *dcaptest.Collateral) { module(c, 1)["mrsigner"] = strings.Repeat("02", 48) }, nil, "", ErrTDXModuleMismatch},
		{"SEAM attributes", nil, func(q *Quote) { q.Body.SeamAttributes[0] = 1 }, "", ErrTDXModuleMismatch},
	}
	for _, tc := range tests {
		c := collateral()
		if tc.edit != nil {
			tc.edit(c)
		}
		claims, err := evaluate(t, p.verifier(t, p.Dir(t, c)), p.quote(t, base, tc.mutate), nil, verifier.Expected{})
		switch {
		case tc.err != nil && !errors.Is(err, tc.err):
			t.Errorf("%s: %v, want %v", tc.name, err, tc.err)
		case tc.err == nil && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.err == nil && claims["tcb_status"] != tc.want:
			t.Errorf("%s: tcb_status %v, want %v", tc.name, claims["tcb_status"], tc.want)
		}
	}
}
