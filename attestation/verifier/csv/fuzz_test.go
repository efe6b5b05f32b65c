package csv

import (
	"encoding/json"
	"errors"
	"testing"

	"github.com/cocoon-cc/cocoon/attestation/verifier/csv/csvtest"

	"github.com/cocoon-cc/cocoon/attestation/verifier"
)

// FuzzParseEvidence: any input parses or fails with a malformed-evidence
// error, and what parses verifies or fails without a panic.
func FuzzParseEvidence(f *testing.F) {
	f.Add(readFixture(f))
	p := csvtest.New(f)
	f.Add(p.Evidence(f, 1, nil, true))
	f.Add(p.Evidence(f, 2, nil, false))
	f.Add([]byte(`{"attestation_report":{"magic":[],"flags":0,"data":[]},"cert_chain":{"pek":{}},"serial_number":[]}`))
	v := testVerifier(f, p, Options{CertDir: f.TempDir()})
	f.Fuzz(func(t *testing.T, b []byte) {
		ev, err := ParseEvidence(b)
		if err != nil {
			if !isMalformed(err) {
				t.Fatalf("parse error of the wrong class: %v", err)
			}
			return
		}
		_, _ = v.Verify(ctx, ev, verifier.Expected{ReportData: []byte{1}})
		_ = Claims(ev)
	})
}

func isMalformed(err error) bool {
	return errors.Is(err, verifier.ErrMalformedEvidence)
}

// FuzzCertificates: any HSK, CEK and PEK bytes are parsed and checked
// against the chain without a panic, and only the genuine ones pass.
func FuzzCertificates(f *testing.F) {
	p := csvtest.New(f)
	f.Add(p.HSKCert, p.CEKCert, p.PEKCert)
	f.Add(p.HRKCert, p.PEKCert, p.CEKCert)
	f.Add([]byte{}, []byte{1}, []byte{2})
	v := testVerifier(f, p, Options{})
	f.Fuzz(func(t *testing.T, hsk, cek, pek []byte) {
		_, err := v.verifyChain(hsk, cek, pek)
		genuine := string(hsk) == string(p.HSKCert) && string(cek) == string(p.CEKCert) && string(pek) == string(p.PEKCert)
		if (err == nil) != genuine {
			t.Fatalf("chain accepted=%v for genuine=%v", err == nil, genuine)
		}
	})
}

// FuzzByteList: serde's byte arrays decode exactly the JSON arrays of
// numbers 0..255 and nothing else.
func FuzzByteList(f *testing.F) {
	for _, s := range []string{"[]", "[0]", "[1, 2 ,255]", "[256]", "[-1]", "[1,]", "[01]", "[1 2]", `"AQ=="`, "null", "[ ]"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var l byteList
		if err := l.UnmarshalJSON(b); err != nil {
			return
		}
		var ints []int
		if err := json.Unmarshal(b, &ints); err != nil || len(ints) != len(l) {
			t.Fatalf("%q decoded to %v, but is not a JSON array of %d numbers (%v)", b, []byte(l), len(l), err)
		}
		for i, n := range ints {
			if n != int(l[i]) {
				t.Fatalf("%q element %d: %d, want %d", b, i, l[i], n)
			}
		}
	})
}
