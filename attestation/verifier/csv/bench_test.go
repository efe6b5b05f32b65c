package csv

import (
	"encoding/binary"
	"testing"

	"github.com/cocoon-cc/cocoon/attestation/verifier/csv/csvtest"
)

// BenchmarkVerifyCSV is a whole Evaluate of Trustee's JSON evidence (a
// version 2 report, JSON parsing, chain, report signature, signer block,
// report data, claims) once the chain is known: HSK and CEK in the
// evidence, or from an offline directory. Run with -cpu 1.
func BenchmarkVerifyCSV(b *testing.B) {
	p := csvtest.New(b)
	rd := binding("nonce")
	dir := b.TempDir()
	writeFile(b, hskCEKPath(dir, testSerial), p.HSKCEK())
	for _, c := range []struct {
		name string
		opts Options
		ev   []byte
	}{
		{"evidence-chain", Options{}, p.Evidence(b, 2, rd, true)},
		{"offline-dir", Options{CertDir: dir}, p.Evidence(b, 2, rd, false)},
	} {
		b.Run(c.name, func(b *testing.B) {
			v := testVerifier(b, p, c.opts)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := v.Evaluate(ctx, c.ev, expect(rd)); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkCSVSignatureFloor is only the SM2-with-SM3 signature checks the
// evidence needs, on certificates parsed beforehand: HRK over HSK, HSK over
// CEK, CEK over PEK, PEK over the report.
func BenchmarkCSVSignatureFloor(b *testing.B) {
	p := csvtest.New(b)
	report := p.Report(b, 2, binding("nonce"))
	hrk, _ := parseCACert(p.HRKCert)
	hsk, _ := parseCACert(p.HSKCert)
	cek, _ := parseCSVCert(p.CEKCert)
	pek, _ := parseCSVCert(p.PEKCert)
	sig := func(c *csvCert, usage uint32) []byte {
		for i := range 2 {
			if s := c.raw[csvBodySize+i*csvSigSize:]; binary.LittleEndian.Uint32(s) == usage {
				return s[8 : 8+sigSize]
			}
		}
		return nil
	}
	b.ReportAllocs()
	for b.Loop() {
		if !hrk.key.verify(hsk.body(), hsk.sig()) || !hsk.key.verify(cek.raw[:csvBodySize], sig(cek, usageHSK)) ||
			!cek.key.verify(pek.raw[:csvBodySize], sig(pek, usageCEK)) || !pek.key.verify(report[:signedV2], report[signedV2:signedV2+sigSize]) {
			b.Fatal("signature")
		}
	}
}
