package dcap

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-tdx-guest/testing/testdata"

	"github.com/cocoon-cc/cocoon/attestation/verifier"
	"github.com/cocoon-cc/cocoon/internal/testutil"
)

// realQuotes are Trustee's real SGX and TDX quotes.
func realQuotes(t testing.TB) [][]byte {
	var out [][]byte
	for _, name := range []string{"occlum_quote.dat", "tdx_quote_4.dat", "tdx_quote_5.dat"} {
		b, err := os.ReadFile(filepath.Join(testutil.Fixtures(t), "trustee/deps/verifier/test_data", name))
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b)
	}
	return out
}

// pemChain cuts the PEM PCK chain out of a quote.
func pemChain(q []byte) []byte {
	return q[bytes.Index(q, []byte("-----BEGIN")):]
}

func FuzzParsePCKChain(f *testing.F) {
	for _, q := range realQuotes(f) {
		f.Add(pemChain(q))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := ParsePCKChain(b)
		if err != nil {
			if !errors.Is(err, verifier.ErrMalformedEvidence) && !errors.Is(err, ErrPCKChain) {
				t.Fatalf("unexpected error %v", err)
			}
			return
		}
		PlatformInstanceID(&c.Platform)
	})
}

// FuzzParseSignatureData parses the signature data of SGX v3 and TDX v4
// and v5 quotes.
func FuzzParseSignatureData(f *testing.F) {
	f.Add(realQuotes(f)[0][HeaderSize+EnclaveReportSize:], uint16(3))
	f.Add(realQuotes(f)[1][HeaderSize+584:], uint16(4))
	f.Fuzz(func(t *testing.T, b []byte, version uint16) {
		if _, err := ParseSignatureData(b, version); err != nil && !errors.Is(err, verifier.ErrMalformedEvidence) {
			t.Fatalf("error %v is not a malformed evidence error", err)
		}
	})
}

func FuzzParseHeader(f *testing.F) {
	for _, q := range realQuotes(f) {
		f.Add(q[:HeaderSize])
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if _, err := ParseHeader(b); err != nil && !errors.Is(err, verifier.ErrMalformedEvidence) {
			t.Fatalf("error %v is not a malformed evidence error", err)
		}
	})
}

// FuzzCollateral feeds TCB info and QE identity documents, as a PCS would
// send them, to the parsers of both TEEs and the platform match.
func FuzzCollateral(f *testing.F) {
	f.Add(testdata.TcbInfoBody, testdata.QeIdentityBody)
	chain, err := ParsePCKChain(pemChain(realQuotes(f)[1]))
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, tcbBody, qeBody []byte) {
		tcb, err1 := SplitSigned(tcbBody, "tcbInfo")
		qe, err2 := SplitSigned(qeBody, "enclaveIdentity")
		if err1 != nil || err2 != nil {
			return
		}
		for _, tee := range []TEE{TDX, SGX} {
			c := &Collateral{}
			if c.TCBInfo, err1 = ParseTCBInfo(tee, tcb.Raw); err1 != nil {
				continue
			}
			c.matchPlatform(&chain.Platform)
			for i := range c.TCBInfo.TcbLevels {
				SGXReaches(&chain.Platform, &c.TCBInfo.TcbLevels[i])
			}
			ParseQEIdentity(tee, qe.Raw)
		}
	})
}

func FuzzParseCRL(f *testing.F) {
	f.Add(testdata.PckCrlBody)
	f.Add(testdata.RootCrlBody)
	f.Fuzz(func(t *testing.T, b []byte) {
		if crl, err := ParseCRL(b); err == nil {
			revokedSerials(crl)
			crlNumber(crl)
		}
	})
}
