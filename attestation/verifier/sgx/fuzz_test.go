package sgx

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"testing"

	"github.com/cocoon-cc/cocoon/attestation/verifier"
	"github.com/cocoon-cc/cocoon/attestation/verifier/dcap"
)

func FuzzParseQuote(f *testing.F) {
	f.Add(occlumQuote(f))
	f.Fuzz(func(t *testing.T, b []byte) {
		q, err := ParseQuote(b)
		switch {
		case err != nil && !errors.Is(err, verifier.ErrMalformedEvidence):
			t.Fatalf("error %v is not a malformed evidence error", err)
		case err != nil:
			return
		}
		if q.Header.Version == 3 || q.Header.Version == 4 {
			// What parses re-serializes to the bytes it came from.
			if out := marshalQuote(q); !bytes.HasPrefix(b, out) {
				t.Fatal("parsed quote does not re-serialize to its input")
			}
		}
		quoteClaims(q, &dcap.PlatformInfo{})
	})
}

// FuzzEvaluate runs whole evidence documents through a Verifier with
// collateral for the test PKI.
func FuzzEvaluate(f *testing.F) {
	p := newTestPKI(f)
	f.Add([]byte(evidenceJSON(p.quote(f, nil))))
	f.Add([]byte(evidenceJSON(occlumQuote(f))))
	v := p.verifier(f, sgxCollateral(f), true)
	f.Fuzz(func(t *testing.T, ev []byte) {
		out, err := v.Evaluate(context.Background(), ev, verifier.Expected{})
		if err == nil {
			if _, err := json.Marshal(out); err != nil {
				t.Fatal(err)
			}
		}
	})
}
