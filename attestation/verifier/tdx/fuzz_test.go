package tdx

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"testing"

	"github.com/google/go-tdx-guest/testing/testdata"

	"github.com/cocoon-cc/cocoon/attestation/verifier"
	"github.com/cocoon-cc/cocoon/attestation/verifier/dcap"
)

// logPrefix trims an event log to its first n events (all for n < 0):
// small seeds keep the fuzzer's minimization of new inputs short.
func logPrefix(t testing.TB, data []byte, n int) []byte {
	log, err := ParseEventLog(data)
	if err != nil {
		t.Fatal(err)
	}
	if n < 0 || n > len(log.Events) {
		n = len(log.Events)
	}
	last := log.Events[n-1].Data
	end := bytes.Index(data, last) + len(last)
	return data[:end]
}

func FuzzParseQuote(f *testing.F) {
	for _, raw := range realQuotes(f) {
		f.Add(raw)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		q, err := ParseQuote(b)
		if err != nil {
			if !errors.Is(err, verifier.ErrMalformedEvidence) {
				t.Fatalf("error %v is not a malformed evidence error", err)
			}
			return
		}
		// What parses re-serializes to the bytes it came from.
		if out := marshalQuote(q); !bytes.HasPrefix(b, out) {
			t.Fatal("parsed quote does not re-serialize to its input")
		}
		quoteClaims(q)
		tdAttributes(q.Body.TDAttributes)
	})
}

func FuzzParseEventLog(f *testing.F) {
	f.Add(logPrefix(f, trusteeData(f, "CCEL_data"), -1))
	f.Add(logPrefix(f, goTDXData(f, "ccel/ccel_data.dat"), 12))
	// Device paths, EFI variables and the attestation agent's events.
	log := trusteeEventlogData(f, "CCEL_AAEL_alibabacloud")
	f.Add(logPrefix(f, log, 14))
	f.Add(append(logPrefix(f, log, 1), log[len(logPrefix(f, log, 84)):len(logPrefix(f, log, -1))]...))
	f.Fuzz(func(t *testing.T, b []byte) {
		log, err := ParseEventLog(b)
		if err != nil {
			if !errors.Is(err, ErrEventLogFormat) {
				t.Fatalf("error %v is not ErrEventLogFormat", err)
			}
			return
		}
		if _, err := json.Marshal(log.Claims()); err != nil {
			t.Fatal(err)
		}
		log.ReplayRTMRs()
	})
}

// FuzzCollateral feeds TCB info and QE identity documents, as a PCS would
// send them, to the parsers and to TCB evaluation of a real quote.
func FuzzCollateral(f *testing.F) {
	f.Add(testdata.TcbInfoBody, testdata.QeIdentityBody)
	f.Add(trusteeData(f, "tcbInfo.json"), trusteeData(f, "enclaveIdentity.json"))
	quotes := []*Quote{mustParse(f, sampleQuote(f)), mustParse(f, trusteeData(f, "tdx_quote_5.dat"))}
	var chains []*dcap.VerifiedChain
	for _, q := range quotes {
		c, err := dcap.ParsePCKChain(q.PCKChain)
		if err != nil {
			f.Fatal(err)
		}
		chains = append(chains, &dcap.VerifiedChain{PCKChain: c})
	}
	f.Fuzz(func(t *testing.T, tcbBody, qeBody []byte) {
		tcb, err1 := dcap.SplitSigned(tcbBody, "tcbInfo")
		qe, err2 := dcap.SplitSigned(qeBody, "enclaveIdentity")
		if err1 != nil || err2 != nil {
			return
		}
		c := &dcap.Collateral{}
		if c.TCBInfo, err1 = dcap.ParseTCBInfo(dcap.TDX, tcb.Raw); err1 != nil {
			return
		}
		if c.QEIdentity, err2 = dcap.ParseQEIdentity(dcap.TDX, qe.Raw); err2 != nil {
			return
		}
		for i, q := range quotes {
			level, err := dcap.CheckQEIdentity(&q.QEReport, &c.QEIdentity)
			if err != nil {
				continue
			}
			r := &dcap.Result{Chain: chains[i], Collateral: c, QELevel: level}
			if _, err := evaluateTCB(q, r); err != nil && !errors.Is(err, verifier.ErrEndorsement) {
				t.Fatalf("evaluateTCB: %v is not an endorsement error", err)
			}
		}
	})
}

// FuzzEvaluate runs whole evidence documents through a Verifier with real
// collateral.
func FuzzEvaluate(f *testing.F) {
	f.Add([]byte(evidenceJSON(sampleQuote(f), nil)))
	f.Add([]byte(evidenceJSON(sprQuote(f), logPrefix(f, trusteeData(f, "CCEL_data"), 3))))
	f.Add([]byte(evidenceJSON(goTDXData(f, "ccel/cos-113-tdx-quote.dat"), logPrefix(f, goTDXData(f, "ccel/ccel_data.dat"), 6))))
	v := sampleVerifier(f)
	f.Fuzz(func(t *testing.T, ev []byte) {
		out, err := v.Evaluate(context.Background(), ev, verifier.Expected{})
		if err == nil {
			if _, err := json.Marshal(out); err != nil {
				t.Fatal(err)
			}
		}
	})
}
