package tdx

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"reflect"
	"testing"

	"github.com/google/go-tdx-guest/abi"
	pb "github.com/google/go-tdx-guest/proto/tdx"

	"github.com/cocoon-cc/cocoon/attestation/verifier"
	"github.com/cocoon-cc/cocoon/attestation/verifier/dcap"
)

// TestParseQuoteMatchesGoTDXGuest cross-checks the v4 parser against
// go-tdx-guest's, field by field.
func TestParseQuoteMatchesGoTDXGuest(t *testing.T) {
	for name, raw := range realQuotes(t) {
		q := mustParse(t, raw)
		if q.Header.Version != 4 {
			continue
		}
		t.Run(name, func(t *testing.T) {
			ref, err := abi.QuoteToProto(raw)
			if err != nil {
				t.Fatal(err)
			}
			p := ref.(*pb.QuoteV4)
			body := p.GetTdQuoteBody()
			sd := p.GetSignedData()
			qe := sd.GetCertificationData().GetQeReportCertificationData()
			rtmrs := body.GetRtmrs()
			checks := []struct {
				name      string
				got, want []byte
			}{
				{"tee_tcb_svn", q.Body.TeeTCBSVN[:], body.GetTeeTcbSvn()},
				{"mr_seam", q.Body.MrSeam[:], body.GetMrSeam()},
				{"mr_td", q.Body.MrTD[:], body.GetMrTd()},
				{"mr_config_id", q.Body.MrConfigID[:], body.GetMrConfigId()},
				{"xfam", q.Body.XFAM[:], body.GetXfam()},
				{"td_attributes", q.Body.TDAttributes[:], body.GetTdAttributes()},
				{"rtmr0", q.Body.RTMR[0][:], rtmrs[0]},
				{"rtmr3", q.Body.RTMR[3][:], rtmrs[3]},
				{"report_data", q.Body.ReportData[:], body.GetReportData()},
				{"signature", q.Signature, sd.GetSignature()},
				{"attestation key", q.AttestationKey, sd.GetEcdsaAttestationKey()},
				{"qe report signature", q.QEReportSignature, qe.GetQeReportSignature()},
				{"qe auth data", q.QEAuthData, qe.GetQeAuthData().GetData()},
				{"pck chain", q.PCKChain, qe.GetPckCertificateChainData().GetPckCertChain()},
				{"qe mrsigner", q.QEReport.MrSigner[:], qe.GetQeReport().GetMrSigner()},
				{"qe report data", q.QEReport.ReportData[:], qe.GetQeReport().GetReportData()},
			}
			for _, c := range checks {
				if !bytes.Equal(c.got, c.want) {
					t.Errorf("%s = %x, go-tdx-guest has %x", c.name, c.got, c.want)
				}
			}
			if uint32(q.QEReport.ISVSVN) != qe.GetQeReport().GetIsvSvn() {
				t.Errorf("QE ISVSVN %d, go-tdx-guest has %d", q.QEReport.ISVSVN, qe.GetQeReport().GetIsvSvn())
			}
		})
	}
}

// TestQuoteClaimsMatchTrustee compares the claims derived from Trustee's
// tdx_quote_4.dat and CCEL_data with the claims Trustee derives from them.
func TestQuoteClaimsMatchTrustee(t *testing.T) {
	q := mustParse(t, trusteeData(t, "tdx_quote_4.dat"))
	chain, err := dcap.ParsePCKChain(q.PCKChain)
	if err != nil {
		t.Fatal(err)
	}
	log, err := ParseEventLog(trusteeData(t, "CCEL_data"))
	if err != nil {
		t.Fatal(err)
	}
	var want any
	if err := json.Unmarshal(trusteeData(t, "parse_tdx_claims_expected.json"), &want); err != nil {
		t.Fatal(err)
	}
	got := jsonValue(t, evidenceClaims(q, log, &chain.Platform))
	if !reflect.DeepEqual(got, want) {
		gb, _ := json.MarshalIndent(got, "", " ")
		t.Errorf("claims differ from Trustee's:\n%s", gb)
	}
}

// TestQuoteV5Claims checks the claims only a v5 quote with a TD 1.5 body has.
func TestQuoteV5Claims(t *testing.T) {
	q := mustParse(t, trusteeData(t, "tdx_quote_5.dat"))
	if q.BodyType != bodyTypeTD15 {
		t.Fatalf("body type %d, want TD 1.5", q.BodyType)
	}
	c := quoteClaims(q)
	body := c["body"].(map[string]any)
	if got := c["header"].(map[string]any)["version"]; got != "0500" {
		t.Errorf("version %v, want 0500", got)
	}
	if c["type"] != "0300" || c["size"] != "88020000" {
		t.Errorf("type %v size %v, want 0300 and 88020000 (648)", c["type"], c["size"])
	}
	if body["tee_tcb_svn2"] != "05010200000000000000000000000000" || len(body["mr_servicetd"].(string)) != 96 {
		t.Errorf("TD 1.5 fields: %v %v", body["tee_tcb_svn2"], body["mr_servicetd"])
	}
	if len(body) != 17 {
		t.Errorf("TD 1.5 body has %d claims, want 17", len(body))
	}
}

// TestParseQuoteRejects checks each layout check with its own error.
func TestParseQuoteRejects(t *testing.T) {
	spr := sprQuote(t)
	v5 := trusteeData(t, "tdx_quote_5.dat")
	edit := func(b []byte, off int, val ...byte) []byte {
		b = bytes.Clone(b)
		copy(b[off:], val)
		return b
	}
	sigLenOff := dcap.HeaderSize + td10BodySize
	certTypeOff := sigLenOff + 4 + 2*dcap.ECDSASize
	authLenOff := certTypeOff + 6 + dcap.EnclaveReportSize + dcap.ECDSASize
	authLen := int(binary.LittleEndian.Uint16(spr[authLenOff:]))
	innerTypeOff := authLenOff + 2 + authLen
	tests := []struct {
		name  string
		quote []byte
		want  error
	}{
		{"empty", nil, dcap.ErrQuoteFormat},
		{"header only", spr[:dcap.HeaderSize], dcap.ErrQuoteFormat},
		{"version 3", edit(spr, 0, 3, 0), dcap.ErrQuoteVersion},
		{"version 6", edit(spr, 0, 6, 0), dcap.ErrQuoteVersion},
		{"SGX tee type", edit(spr, 4, 0, 0, 0, 0), dcap.ErrTeeType},
		{"ECDSA P-384 key type", edit(spr, 2, 3, 0), dcap.ErrAttestationKey},
		{"foreign QE vendor", edit(spr, 12, 0), dcap.ErrQEVendor},
		{"v5 SGX body", edit(v5, dcap.HeaderSize, 1, 0), dcap.ErrTeeType},
		{"v5 body size mismatch", edit(v5, dcap.HeaderSize+2, 0x48, 2, 0, 0), dcap.ErrQuoteFormat},
		{"signature data too long", edit(spr, sigLenOff, 0xff, 0xff, 0, 0), dcap.ErrQuoteFormat},
		{"signature data too short", edit(spr, sigLenOff, 0x10, 0, 0, 0), dcap.ErrQuoteFormat},
		{"certification data type 5", edit(spr, certTypeOff, 5, 0), dcap.ErrCertificationData},
		{"auth data overruns", edit(spr, authLenOff, 0xff, 0xff), dcap.ErrQuoteFormat},
		{"inner type 4", edit(spr, innerTypeOff, 4, 0), dcap.ErrCertificationData},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseQuote(tc.quote)
			if !errors.Is(err, tc.want) || !errors.Is(err, verifier.ErrMalformedEvidence) {
				t.Errorf("ParseQuote = %v, want %v", err, tc.want)
			}
		})
	}
}

// TestParseQuoteTruncated cuts every real quote at every length.
func TestParseQuoteTruncated(t *testing.T) {
	for name, raw := range realQuotes(t) {
		end := len(marshalQuote(mustParse(t, raw)))
		for n := 0; n < end; n++ {
			if _, err := ParseQuote(raw[:n]); !errors.Is(err, verifier.ErrMalformedEvidence) {
				t.Fatalf("%s cut at %d: %v, want a malformed evidence error", name, n, err)
			}
		}
	}
}

// TestParseQuoteIgnoresTrailingBytes: guests hand over fixed-size buffers.
func TestParseQuoteIgnoresTrailingBytes(t *testing.T) {
	raw := sprQuote(t)
	q := mustParse(t, append(bytes.Clone(raw), 1, 2, 3))
	if !bytes.Equal(marshalQuote(q), marshalQuote(mustParse(t, raw))) {
		t.Error("trailing bytes changed the parsed quote")
	}
}
