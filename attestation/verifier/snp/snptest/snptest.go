// Package snptest signs SEV-SNP reports with a test chain, go-sev-guest's
// test-only ARK, ASK and VCEK, the VCEK issued for the chip and TCB of a
// given report: what the snp verifier accepts with Options.Roots set to
// the chain, for tests with live report data (captured reports fix it).
package snptest

import (
	"crypto/x509"
	"encoding/binary"
	"encoding/pem"
	"math/big"
	"slices"
	"testing"
	"time"

	"github.com/google/go-sev-guest/abi"
	"github.com/google/go-sev-guest/kds"
	sevtest "github.com/google/go-sev-guest/testing"

	"github.com/cocoon-cc/cocoon/attestation/verifier/snp"
)

// Offsets in a report: REPORT_DATA, and the signature's R and S (72
// bytes each, little-endian) after the signed part.
const (
	offReportData = 0x50
	offSignature  = 0x2a0
	rsSize        = 72
)

// PKI is a test ARK, ASK and VCEK for one chip.
type PKI struct {
	signer *sevtest.AmdSigner
}

// New issues a test chain whose VCEK is for the chip ID, reported TCB and
// product of report (a raw report; Milan for a version 2 one), valid from
// now on for years.
func New(t testing.TB, report []byte) *PKI {
	t.Helper()
	r, err := snp.ParseReport(report)
	if err != nil {
		t.Fatal(err)
	}
	product := r.Product()
	switch product {
	case snp.ProductUnknown:
		product = snp.Milan
	case snp.Turin:
		t.Fatal("snptest: go-sev-guest's test signer issues no Turin VCEK (FMC SPL)")
	}
	tcb := r.ReportedTCB()
	var hwid [abi.ChipIDSize]byte
	copy(hwid[:], r.Proto().ChipId)
	name := product.String() + "-B0"
	b := &sevtest.AmdSignerBuilder{
		ProductName: name, HWID: hwid,
		ArkCreationTime: time.Now(), AskCreationTime: time.Now(), AsvkCreationTime: time.Now(), VcekCreationTime: time.Now(),
		VcekCustom: sevtest.CertOverride{Extensions: sevtest.CustomExtensions(kds.TCBParts{
			BlSpl: tcb.Bootloader, TeeSpl: tcb.TEE, SnpSpl: tcb.SNP, UcodeSpl: tcb.Microcode,
		}, hwid[:], "", name)},
	}
	s, err := b.TestOnlyCertChain()
	if err != nil {
		t.Fatal(err)
	}
	return &PKI{signer: s}
}

// Roots are the ARK and ASK as PEM, for snp.Options.Roots.
func (p *PKI) Roots() []byte {
	var out []byte
	for _, c := range []*x509.Certificate{p.signer.Ask, p.signer.Ark} {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return out
}

// VCEK is the VCEK certificate (DER).
func (p *PKI) VCEK() []byte { return p.signer.Vcek.Raw }

// Sign returns report with reportData as its REPORT_DATA (zero padded),
// signed with the VCEK.
func (p *PKI) Sign(t testing.TB, report, reportData []byte) []byte {
	t.Helper()
	if len(report) != abi.ReportSize || len(reportData) > abi.ReportDataSize {
		t.Fatalf("snptest: report of %d bytes, report data of %d", len(report), len(reportData))
	}
	out := slices.Clone(report)
	copy(out[offReportData:offReportData+abi.ReportDataSize], make([]byte, abi.ReportDataSize))
	copy(out[offReportData:], reportData)
	binary.LittleEndian.PutUint32(out[0x34:], 1) // SIGNATURE_ALGO: ECDSA P-384 with SHA-384
	r, s, err := p.signer.Sign(abi.SignedComponent(out))
	if err != nil {
		t.Fatal(err)
	}
	sig := out[offSignature:abi.ReportSize]
	clear(sig)
	for i, n := range []*big.Int{r, s} {
		be := n.FillBytes(make([]byte, rsSize))
		slices.Reverse(be)
		copy(sig[i*rsSize:], be)
	}
	return out
}
