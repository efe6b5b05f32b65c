package tdx

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	tdxtesting "github.com/google/go-tdx-guest/testing"
	"github.com/google/go-tdx-guest/testing/testdata"

	"github.com/cocoon-cc/cocoon/attestation/verifier"
	"github.com/cocoon-cc/cocoon/attestation/verifier/dcap/dcaptest"
	"github.com/cocoon-cc/cocoon/internal/testutil"
)

// sampleTime is when go-tdx-guest's sample collateral (PCS responses of
// June 2023) is valid.
var sampleTime = time.Date(2023, time.July, 1, 1, 0, 0, 0, time.UTC)

// sampleFMSPC is the FMSPC of the sample TCB info, of go-tdx-guest's SPR
// quote and of Trustee's tdx_quote_4.dat (sampleQuote).
const sampleFMSPC = "50806F000000"

func readFile(t testing.TB, path ...string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(path...))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// trusteeData reads Trustee's verifier test data from the shared fixtures.
func trusteeData(t testing.TB, name string) []byte {
	return readFile(t, testutil.Fixtures(t), "trustee/deps/verifier/test_data", name)
}

// trusteeEventlogData reads Trustee's event log test data.
func trusteeEventlogData(t testing.TB, name string) []byte {
	return readFile(t, testutil.Fixtures(t), "trustee/deps/eventlog/test_data", name)
}

// goTDXData reads go-tdx-guest's testdata from the module cache.
func goTDXData(t testing.TB, name string) []byte {
	return readFile(t, testutil.ModuleDir(t, "github.com/google/go-tdx-guest"), "testing/testdata", name)
}

// sprQuote is go-tdx-guest's real SPR quote. Its platform's TCB is below
// every level of the sample TCB info, so it fails with dcap.ErrTCBNotSupported,
// as go-tdx-guest's own tests expect.
func sprQuote(t testing.TB) []byte { return goTDXData(t, "tdx_prod_quote_SPR_E4.dat") }

// sampleQuote is Trustee's real v4 quote. Its platform has the FMSPC and
// PCK CA of the sample collateral and an up-to-date TCB, so it verifies
// fully against go-tdx-guest's sample collateral at sampleTime.
func sampleQuote(t testing.TB) []byte { return trusteeData(t, "tdx_quote_4.dat") }

func mustParse(t testing.TB, b []byte) *Quote {
	t.Helper()
	q, err := ParseQuote(b)
	if err != nil {
		t.Fatal(err)
	}
	return q
}

// sampleResponses are go-tdx-guest's saved PCS responses, keyed by the PCCS
// path and query this package asks for.
func sampleResponses() map[string]struct {
	header http.Header
	body   []byte
} {
	type resp = struct {
		header http.Header
		body   []byte
	}
	return map[string]resp{
		"/tdx/certification/v4/tcb?fmspc=" + sampleFMSPC + "&update=early": {tdxtesting.TcbInfoHeader, testdata.TcbInfoBody},
		"/tdx/certification/v4/qe/identity?update=early":                   {tdxtesting.QeIdentityHeader, testdata.QeIdentityBody},
		"/sgx/certification/v4/pckcrl?ca=platform&encoding=der":            {tdxtesting.PckCrlHeader, testdata.PckCrlBody},
		"/sgx/certification/v4/rootcacrl":                                  {nil, testdata.RootCrlBody},
	}
}

// pccs is a local PCCS serving saved responses; it counts requests.
type pccs struct {
	*httptest.Server
	requests atomic.Int64
}

func newPCCS(t testing.TB) *pccs {
	responses := sampleResponses()
	p := &pccs{}
	p.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.requests.Add(1)
		resp, ok := responses[r.URL.RequestURI()]
		if !ok {
			http.NotFound(w, r)
			return
		}
		for k, v := range resp.header {
			w.Header()[k] = v
		}
		w.Write(resp.body)
	}))
	t.Cleanup(p.Close)
	return p
}

// writeSampleDir saves the sample responses in the CollateralDir layout.
func writeSampleDir(t testing.TB) string {
	dir := t.TempDir()
	files := map[string][]byte{
		"tcb-info-" + sampleFMSPC + ".json":              testdata.TcbInfoBody,
		"tcb-info-" + sampleFMSPC + ".json.issuer-chain": []byte(tdxtesting.TcbInfoHeader["Tcb-Info-Issuer-Chain"][0]),
		"qe-identity.json":                               testdata.QeIdentityBody,
		"qe-identity.json.issuer-chain":                  []byte(tdxtesting.QeIdentityHeader["Sgx-Enclave-Identity-Issuer-Chain"][0]),
		"pck-crl-platform.der":                           testdata.PckCrlBody,
		"root-ca-crl.der":                                testdata.RootCrlBody,
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// sampleVerifier verifies against the sample collateral at sampleTime.
func sampleVerifier(t testing.TB) *Verifier {
	t.Helper()
	v, err := New(Options{CollateralDir: writeSampleDir(t), Now: func() time.Time { return sampleTime }})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func evidenceJSON(quote, log []byte) json.RawMessage {
	ev := map[string]any{"quote": base64.StdEncoding.EncodeToString(quote), "cc_eventlog": nil}
	if log != nil {
		ev["cc_eventlog"] = base64.StdEncoding.EncodeToString(log)
	}
	b, _ := json.Marshal(ev)
	return b
}

func evaluate(t testing.TB, v *Verifier, quote, log []byte, want verifier.Expected) (verifier.Claims, error) {
	t.Helper()
	out, err := v.Evaluate(context.Background(), evidenceJSON(quote, log), want)
	if err != nil {
		return nil, err
	}
	if len(out) != 1 || out[0].Class != "cpu" {
		t.Fatalf("Evaluate returned %+v, want one cpu claim set", out)
	}
	return out[0].Claims, nil
}

// jsonValue round-trips v through JSON so claims compare with parsed files.
func jsonValue(t testing.TB, v any) any {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var out any
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

// marshalQuote serializes q in its version's layout, the inverse of
// ParseQuote, so tests can build consistent quotes.
func marshalQuote(q *Quote) []byte {
	le16 := binary.LittleEndian.AppendUint16
	le32 := binary.LittleEndian.AppendUint32
	h := &q.Header
	b := le16(nil, h.Version)
	b = le16(b, h.AttKeyType)
	b = le32(b, h.TeeType)
	b = append(b, h.Reserved[:]...)
	b = append(b, h.VendorID[:]...)
	b = append(b, h.UserData[:]...)
	if h.Version == 5 {
		b = le16(b, q.BodyType)
		b = le32(b, q.BodySize)
	}
	body := &q.Body
	for _, f := range [][]byte{body.TeeTCBSVN[:], body.MrSeam[:], body.MrSignerSeam[:], body.SeamAttributes[:],
		body.TDAttributes[:], body.XFAM[:], body.MrTD[:], body.MrConfigID[:], body.MrOwner[:], body.MrOwnerConfig[:],
		body.RTMR[0][:], body.RTMR[1][:], body.RTMR[2][:], body.RTMR[3][:], body.ReportData[:]} {
		b = append(b, f...)
	}
	if q.BodyType == bodyTypeTD15 {
		b = append(append(b, body.TeeTCBSVN2[:]...), body.MrServiceTD[:]...)
	}
	return append(b, dcaptest.MarshalSignatureData(&q.SignatureData, h.Version)...)
}

func TestMarshalQuoteRoundTrips(t *testing.T) {
	for name, raw := range realQuotes(t) {
		q := mustParse(t, raw)
		got := marshalQuote(q)
		if want := raw[:len(got)]; string(got) != string(want) {
			t.Errorf("%s: marshalQuote does not reproduce the quote", name)
		}
	}
}

// realQuotes are the real hardware quotes the tests use.
func realQuotes(t testing.TB) map[string][]byte {
	return map[string][]byte{
		"go-tdx-guest SPR v4": sprQuote(t),
		"go-tdx-guest COS v4": goTDXData(t, "ccel/cos-113-tdx-quote.dat"),
		"trustee tdx_quote_4": trusteeData(t, "tdx_quote_4.dat"),
		"trustee tdx_quote_5": trusteeData(t, "tdx_quote_5.dat"),
	}
}
