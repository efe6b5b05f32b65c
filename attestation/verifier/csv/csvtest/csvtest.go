// Package csvtest builds Hygon CSV evidence signed by test keys: an HRK,
// HSK, CEK and PEK in Hygon's binary certificate formats, and attestation
// reports of version 1 (masked with an anonce) and 2, in Trustee's JSON.
// A verifier trusts them when given the test HRK as its root. It stands in
// for the Hygon machine tests do not have, never for the verifier.
package csvtest

import (
	"context"
	"crypto/rand"
	"encoding/asn1"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"maps"
	"math/big"
	"slices"
	"testing"

	"github.com/emmansun/gmsm/sm2"
	"github.com/emmansun/gmsm/sm3"

	"github.com/cocoon-cc/cocoon/protocol"
)

// Hygon's layouts (see the csv package).
const (
	caCertSize  = 832
	caBodySize  = 576
	csvCertSize = 2084
	csvBodySize = 1044
	csvSigSize  = 520
	pointSize   = 72
	sigSize     = 2 * pointSize
	reportSize  = 4096
	signedV1    = 180
	signedV2    = 1024
	teeInfoV1   = 0x150
	teeInfoV2   = 0x490
	serialSize  = 64

	UsageHRK = 0x0000
	UsageHSK = 0x0013
	UsageOCA = 0x1001
	UsagePEK = 0x1002
	UsageCEK = 0x1004
	algoSM2  = 0x0004
)

// ExtMagic is the magic of an extended (version 2) report request.
var ExtMagic = []byte("ATTESTATION_EXT\x00")

// Serial is the test chip's serial number.
const Serial = "HGT0123456789"

// Key is an SM2 key with the user ID its certificate names.
type Key struct {
	priv *sm2.PrivateKey
	uid  []byte
	kid  []byte
}

// NewKey returns a fresh key signing with user ID uid.
func NewKey(t testing.TB, uid string) *Key {
	t.Helper()
	p, err := sm2.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	kid := make([]byte, 16)
	rand.Read(kid)
	return &Key{priv: p, uid: []byte(uid), kid: kid}
}

// Sign returns an SM2-with-SM3 signature as the firmware lays it out: r
// and s as 72-byte little-endian fields.
func (k *Key) Sign(t testing.TB, msg []byte) []byte {
	t.Helper()
	der, err := k.priv.SignWithSM2(rand.Reader, k.uid, msg)
	if err != nil {
		t.Fatal(err)
	}
	var rs struct{ R, S *big.Int }
	if _, err := asn1.Unmarshal(der, &rs); err != nil {
		t.Fatal(err)
	}
	return append(le(rs.R, pointSize), le(rs.S, pointSize)...)
}

func le(n *big.Int, size int) []byte {
	b := n.FillBytes(make([]byte, size))
	slices.Reverse(b)
	return b
}

func (k *Key) putKey(dst []byte) {
	binary.LittleEndian.PutUint32(dst, 3) // SM2-256
	copy(dst[4:], le(k.priv.X, pointSize))
	copy(dst[4+pointSize:], le(k.priv.Y, pointSize))
}

// CACert is the CA-form certificate of k (an HRK or HSK) signed by signer.
func CACert(t testing.TB, k *Key, usage uint32, signer *Key) []byte {
	b := make([]byte, caCertSize)
	binary.LittleEndian.PutUint32(b, 1)
	copy(b[4:], k.kid)
	copy(b[20:], signer.kid)
	binary.LittleEndian.PutUint32(b[36:], usage)
	k.putKey(b[64:])
	binary.LittleEndian.PutUint16(b[212:], uint16(len(k.uid)))
	copy(b[214:], k.uid)
	copy(b[caBodySize:], signer.Sign(t, b[:caBodySize]))
	return b
}

// CSVCert is the CSV-form certificate of k (a CEK or PEK), signed by each
// signer in a slot of the signer's usage.
func CSVCert(t testing.TB, k *Key, usage uint32, signers map[uint32]*Key) []byte {
	b := make([]byte, csvCertSize)
	binary.LittleEndian.PutUint32(b, 1)
	b[4], b[5] = 1, 3 // firmware 1.3
	binary.LittleEndian.PutUint32(b[8:], usage)
	binary.LittleEndian.PutUint32(b[12:], algoSM2)
	k.putKey(b[16:])
	binary.LittleEndian.PutUint16(b[164:], uint16(len(k.uid)))
	copy(b[166:], k.uid)
	for i, u := range slices.Sorted(maps.Keys(signers)) {
		s := b[csvBodySize+i*csvSigSize:]
		binary.LittleEndian.PutUint32(s, u)
		binary.LittleEndian.PutUint32(s[4:], algoSM2)
		copy(s[8:], signers[u].Sign(t, b[:csvBodySize]))
	}
	return b
}

// PKI is a test chip's chain: HRK → HSK → CEK → PEK (also signed by the
// owner's OCA, as a real PEK is).
type PKI struct {
	HRK, HSK, CEK, PEK, OCA            *Key
	HRKCert, HSKCert, CEKCert, PEKCert []byte
	// Measure is the launch digest every report of the test guest has.
	Measure []byte
	// EventLog is the guest's CC event log (SM3) and RTMR the registers
	// of its version 2 reports: RTMR0 = Measure, RTMR1-4 its replay.
	EventLog []byte
	RTMR     [5][]byte
}

// New returns a fresh chain.
func New(t testing.TB) *PKI {
	p := &PKI{HRK: NewKey(t, "HYGON-SSD-HRK"), HSK: NewKey(t, "HYGON-SSD-HSK"),
		CEK: NewKey(t, "HYGON-SSD-CEK"), PEK: NewKey(t, "HYGON-SSD-PEK"), OCA: NewKey(t, "HYGON-SSD-OCA")}
	p.HRKCert = CACert(t, p.HRK, UsageHRK, p.HRK)
	p.HSKCert = CACert(t, p.HSK, UsageHSK, p.HRK)
	p.CEKCert = CSVCert(t, p.CEK, UsageCEK, map[uint32]*Key{UsageHSK: p.HSK})
	p.PEKCert = CSVCert(t, p.PEK, UsagePEK, map[uint32]*Key{UsageCEK: p.CEK, UsageOCA: p.OCA})
	p.Measure = make([]byte, 32)
	rand.Read(p.Measure)
	p.EventLog, p.RTMR = eventLog(map[uint32][]string{1: {"firmware"}, 3: {"kernel", "initrd"}, 4: {"runtime"}})
	p.RTMR[0] = p.Measure
	return p
}

// HSKCEK is the pair as Hygon's KDS serves it.
func (p *PKI) HSKCEK() []byte { return append(slices.Clone(p.HSKCert), p.CEKCert...) }

// Report is a report page of version 1 or 2 carrying reportData, signed by
// the PEK, with the signer block as the attester leaves it (restored).
func (p *PKI) Report(t testing.TB, version int, reportData []byte) []byte {
	d := make([]byte, reportSize)
	rand.Read(d[0:64]) // user_pubkey_digest, vm_id, vm_version
	copy(d[64:128], reportData)
	rand.Read(d[128:144]) // mnonce
	copy(d[144:176], p.Measure)
	binary.LittleEndian.PutUint32(d[176:], 0x45) // policy: nodbg, es, csv3
	binary.LittleEndian.PutUint32(d[180:], UsagePEK)
	binary.LittleEndian.PutUint32(d[184:], algoSM2)
	signer := teeInfoV1
	if version == 1 {
		anonce := []byte{0x26, 0xd7, 0xc7, 0x5d}
		for i := range 188 {
			d[i] ^= anonce[i%4]
		}
		copy(d[188:], anonce)
		copy(d[192:], p.PEK.Sign(t, d[:signedV1]))
	} else {
		binary.LittleEndian.PutUint32(d[188:], 2024) // build
		binary.LittleEndian.PutUint16(d[192:], 1)    // rtmr_version
		for i, r := range p.RTMR {
			copy(d[208+32*i:], r)
		}
		copy(d[signedV2:], p.PEK.Sign(t, d[:signedV2]))
		signer = teeInfoV2
	}
	copy(d[signer:], p.PEKCert)
	copy(d[signer+csvCertSize:], Serial)
	return d
}

// Evidence is Trustee's JSON evidence for a fresh report of p, with the
// HSK and CEK when withChain.
func (p *PKI) Evidence(t testing.TB, version int, reportData []byte, withChain bool) []byte {
	return p.EvidenceOf(t, version, p.Report(t, version, reportData), withChain)
}

// EvidenceOf is Trustee's JSON evidence for report.
func (p *PKI) EvidenceOf(t testing.TB, version int, report []byte, withChain bool) []byte {
	t.Helper()
	magic, flags := make([]byte, 16), 0
	if version == 2 {
		magic, flags = ExtMagic, 1
	}
	chain := map[string]any{"pek": csvCertJSON(p.PEKCert)}
	if withChain {
		chain["hsk_cek"] = map[string]any{"hsk": caCertJSON(p.HSKCert), "cek": csvCertJSON(p.CEKCert)}
	}
	serial := make([]byte, serialSize)
	copy(serial, Serial)
	ev := map[string]any{
		"attestation_report": map[string]any{"magic": nums(magic), "flags": flags, "data": nums(report)},
		"cert_chain":         chain,
		"serial_number":      nums(serial),
	}
	if version == 2 {
		ev["cc_eventlog"] = base64.StdEncoding.EncodeToString(p.EventLog)
	}
	b, err := json.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Attester is a guest on the test chip: it answers the KBS's challenge
// with version 2 evidence carrying the report data, HSK and CEK included
// unless NoChain (as Trustee's captured evidence: the verifier then needs
// the pair from its operator or Hygon's KDS).
type Attester struct {
	PKI     *PKI
	T       testing.TB
	NoChain bool
}

// Tee implements attester.Attester.
func (Attester) Tee() protocol.Tee { return protocol.TeeCSV }

// Evidence implements attester.Attester.
func (a Attester) Evidence(_ context.Context, reportData []byte) (json.RawMessage, error) {
	return a.PKI.Evidence(a.T, 2, reportData, !a.NoChain), nil
}

// nums is serde's form of a byte array: a JSON array of numbers.
func nums(b []byte) []int {
	out := make([]int, len(b))
	for i, c := range b {
		out[i] = int(c)
	}
	return out
}

func u32(b []byte) uint32 { return binary.LittleEndian.Uint32(b) }

func keyJSON(b []byte) map[string]any {
	return map[string]any{"g": u32(b), "x": nums(b[4 : 4+pointSize]), "y": nums(b[4+pointSize : 4+2*pointSize])}
}

func sigJSON(b []byte) map[string]any {
	return map[string]any{"r": nums(b[:pointSize]), "s": nums(b[pointSize:sigSize])}
}

func caCertJSON(b []byte) map[string]any {
	return map[string]any{
		"body": map[string]any{
			"preamble": map[string]any{"ver": u32(b), "data": map[string]any{
				"kid": nums(b[4:20]), "sid": nums(b[20:36]), "usage": u32(b[36:]), "reserved": nums(b[40:64])}},
			"pubkey":   keyJSON(b[64:]),
			"uid_size": binary.LittleEndian.Uint16(b[212:]),
			"user_id":  nums(b[214:468]),
			"reserved": nums(b[468:576]),
		},
		"signature": sigJSON(b[576:]),
		"_reserved": nums(b[720:832]),
	}
}

func csvCertJSON(b []byte) map[string]any {
	sigs := make([]any, 2)
	for i := range sigs {
		s := b[csvBodySize+i*csvSigSize:]
		sigs[i] = map[string]any{"usage": u32(s), "algo": u32(s[4:]), "signature": sigJSON(s[8:]), "_reserved": nums(s[152:520])}
	}
	return map[string]any{
		"body": map[string]any{"ver": u32(b), "data": map[string]any{
			"firmware":  map[string]any{"major": b[4], "minor": b[5]},
			"reserved1": binary.LittleEndian.Uint16(b[6:]),
			"pubkey":    map[string]any{"usage": u32(b[8:]), "algo": u32(b[12:]), "key": keyJSON(b[16:])},
			"uid_size":  binary.LittleEndian.Uint16(b[164:]),
			"user_id":   nums(b[166:420]),
			"sid":       nums(b[420:436]),
			"reserved2": nums(b[436:1044]),
		}},
		"sigs": sigs,
	}
}

// eventLog is a TCG crypto-agile log of EV_EFI_ACTION events measured with
// SM3 (CC MR index → event texts, in order), and the registers its replay
// gives (index 1 to 4; index 0 unset).
func eventLog(events map[uint32][]string) ([]byte, [5][]byte) {
	le := binary.LittleEndian
	var b []byte
	// Spec ID event, SHA-1 format: MR 0, EV_NO_ACTION, zero digest.
	spec := append([]byte("Spec ID Event03\x00"), 0, 0, 0, 0, 0, 2, 0, 2)
	spec = le.AppendUint32(spec, 1)
	spec = le.AppendUint16(spec, 0x12) // SM3
	spec = le.AppendUint16(spec, 32)
	spec = append(spec, 0) // no vendor info
	b = le.AppendUint32(b, 0)
	b = le.AppendUint32(b, 3)
	b = append(b, make([]byte, 20)...)
	b = le.AppendUint32(b, uint32(len(spec)))
	b = append(b, spec...)
	var regs [5][]byte
	for i := 1; i <= 4; i++ {
		regs[i] = make([]byte, 32)
	}
	for _, idx := range slices.Sorted(maps.Keys(events)) {
		for _, text := range events[idx] {
			d := sm3.Sum([]byte(text))
			b = le.AppendUint32(b, idx)
			b = le.AppendUint32(b, 0x80000007) // EV_EFI_ACTION
			b = le.AppendUint32(b, 1)
			b = le.AppendUint16(b, 0x12)
			b = append(b, d[:]...)
			b = le.AppendUint32(b, uint32(len(text)))
			b = append(b, text...)
			h := sm3.New()
			h.Write(regs[idx])
			h.Write(d[:])
			regs[idx] = h.Sum(nil)
		}
	}
	return b, regs
}
