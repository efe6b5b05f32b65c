// Package sesttest stands in for IBM's side of Secure Execution in tests:
// a root CA, an intermediate, an IBM Z host-key signing key and host-key
// documents with their CRLs, an SE image header, and an Ultravisor that
// answers attestation requests with a host key's private part. It never
// stands in for the verifier.
package sesttest

import (
	"context"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"encoding/json"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cocoon-cc/cocoon/attestation/verifier/se"
	"github.com/cocoon-cc/cocoon/internal/testutil"
	"github.com/cocoon-cc/cocoon/protocol"
)

// Cert is a certificate with its key.
type Cert struct {
	Cert *x509.Certificate
	Key  *ecdsa.PrivateKey
}

// PKI is IBM's chain for host-key documents, made with test keys.
type PKI struct {
	Root, Inter, Sign Cert
	HKD               Cert // a host-key document (P-521)
	Now               time.Time
	serial            int64
}

// SigningSubject is the subject s390-tools recognises as IBM's Z host-key
// signing key.
func SigningSubject() pkix.Name {
	return pkix.Name{Country: []string{"US"}, Province: []string{"New York"}, Locality: []string{"Poughkeepsie"},
		Organization:       []string{"International Business Machines Corporation"},
		OrganizationalUnit: []string{"IBM Z Host Key Signing Service"},
		CommonName:         "International Business Machines Corporation"}
}

// New returns a chain valid at now: root → intermediate → signing key →
// one host-key document.
func New(t testing.TB) *PKI {
	p := &PKI{Now: time.Now()}
	p.Root = p.Issue(t, pkix.Name{CommonName: "Test Root CA"}, nil, true, elliptic.P384())
	p.Inter = p.Issue(t, pkix.Name{CommonName: "Test Code Signing CA"}, &p.Root, true, elliptic.P384())
	p.Sign = p.Issue(t, SigningSubject(), &p.Inter, false, elliptic.P384())
	p.HKD = p.Issue(t, pkix.Name{CommonName: "HKD-8562-TEST"}, &p.Sign, false, elliptic.P521())
	return p
}

// Issue makes a certificate for subject signed by parent (self-signed
// when nil), valid an hour around Now.
func (p *PKI) Issue(t testing.TB, subject pkix.Name, parent *Cert, ca bool, curve elliptic.Curve) Cert {
	return p.IssueValid(t, subject, parent, ca, curve, p.Now.Add(-time.Hour), p.Now.Add(time.Hour))
}

// IssueValid is Issue with a validity period.
func (p *PKI) IssueValid(t testing.TB, subject pkix.Name, parent *Cert, ca bool, curve elliptic.Curve, from, to time.Time) Cert {
	t.Helper()
	key, err := ecdsa.GenerateKey(curve, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	p.serial++
	skid := make([]byte, 20)
	rand.Read(skid)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(p.serial), Subject: subject, NotBefore: from, NotAfter: to,
		BasicConstraintsValid: true, IsCA: ca, SubjectKeyId: skid}
	if ca {
		tmpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageCRLSign
	} else {
		tmpl.KeyUsage = x509.KeyUsageDigitalSignature | x509.KeyUsageCRLSign
	}
	pc, pk := tmpl, key
	if parent != nil {
		pc, pk = parent.Cert, parent.Key
	}
	return Cert{Cert: testutil.Certificate(t, tmpl, pc, &key.PublicKey, pk), Key: key}
}

// CRL is issuer's CRL, current at Now, revoking serials.
func (p *PKI) CRL(t testing.TB, issuer Cert, revoked ...*big.Int) *x509.RevocationList {
	return p.CRLValid(t, issuer, p.Now.Add(-time.Hour), p.Now.Add(time.Hour), revoked...)
}

// CRLValid is CRL with its update times.
func (p *PKI) CRLValid(t testing.TB, issuer Cert, this, next time.Time, revoked ...*big.Int) *x509.RevocationList {
	t.Helper()
	tmpl := &x509.RevocationList{Number: big.NewInt(1), ThisUpdate: this, NextUpdate: next}
	for _, s := range revoked {
		tmpl.RevokedCertificateEntries = append(tmpl.RevokedCertificateEntries,
			x509.RevocationListEntry{SerialNumber: s, RevocationTime: this})
	}
	// Go's CreateRevocationList wants a CA issuer with cRLSign: the signing
	// key signs its own CRL as IBM's does.
	issuerCert := *issuer.Cert
	issuerCert.IsCA = true
	issuerCert.BasicConstraintsValid = true
	der, err := x509.CreateRevocationList(rand.Reader, tmpl, &issuerCert, issuer.Key)
	if err != nil {
		t.Fatal(err)
	}
	crl, err := x509.ParseRevocationList(der)
	if err != nil {
		t.Fatal(err)
	}
	return crl
}

// Endorsements are the chain and current CRLs revoking nothing.
func (p *PKI) Endorsements(t testing.TB) se.Endorsements {
	roots := x509.NewCertPool()
	roots.AddCert(p.Root.Cert)
	return se.Endorsements{Certs: []*x509.Certificate{p.Sign.Cert, p.Inter.Cert}, Roots: roots,
		CRLs: []*x509.RevocationList{p.CRL(t, p.Root), p.CRL(t, p.Inter), p.CRL(t, p.Sign)}}
}

// Header is an SE image header (hdr.bin) with random digests and tag.
func Header() []byte {
	h := make([]byte, 0x1a0+0x100)
	copy(h, "IBMSecEx")
	binary.BigEndian.PutUint32(h[8:], 0x100)
	binary.BigEndian.PutUint32(h[12:], uint32(len(h)))
	rand.Read(h[0xe0:0x1a0])
	rand.Read(h[len(h)-16:])
	return h
}

// WriteDir lays the PKI, its CRLs and hdr out as Trustee's
// /run/confidential-containers/ibmse.
func (p *PKI) WriteDir(t testing.TB, dir string, hdr []byte) {
	t.Helper()
	e := p.Endorsements(t)
	write := func(name, typ string, der []byte) {
		path := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("hkds/HKD-8562-TEST.crt", "CERTIFICATE", p.HKD.Cert.Raw)
	write("certs/ibm-z-host-key-signing.crt", "CERTIFICATE", p.Sign.Cert.Raw)
	write("certs/inter-ca.crt", "CERTIFICATE", p.Inter.Cert.Raw)
	write("root_ca.crt", "CERTIFICATE", p.Root.Cert.Raw)
	for i, crl := range e.CRLs {
		write(filepath.Join("crls", string(rune('a'+i))+".crl"), "X509 CRL", crl.Raw)
	}
	if err := os.MkdirAll(filepath.Join(dir, "hdr"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "hdr", "hdr.bin"), hdr, 0o644); err != nil {
		t.Fatal(err)
	}
}

// Ultravisor answers attestation requests for a guest booted from an
// image with header Tags, on a machine with host key HostKey.
type Ultravisor struct {
	HostKey *ecdh.PrivateKey
	Tags    se.Tags
	CUID    []byte
}

// NewUltravisor is the Ultravisor of the machine p's host-key document is
// for, running the image of hdr.
func (p *PKI) NewUltravisor(t testing.TB, hdr []byte) *Ultravisor {
	k, err := p.HKD.Key.ECDH()
	if err != nil {
		t.Fatal(err)
	}
	tags, err := se.ParseHeader(hdr)
	if err != nil {
		t.Fatal(err)
	}
	cuid := make([]byte, 16)
	rand.Read(cuid)
	return &Ultravisor{HostKey: k, Tags: tags, CUID: cuid}
}

// ErrNoKeySlot: the request has no key slot for this host key.
var ErrNoKeySlot = errors.New("sesttest: no key slot for this host key")

// Attest unpacks the ARCB with the host key and computes the measurement
// over user data, as the Ultravisor's Retrieve Attestation Measurement
// does; the additional data are the image's and the request's public
// host-key hashes (both this machine's).
func (u *Ultravisor) Attest(arcb, user []byte) (measurement, additional []byte, err error) {
	if len(arcb) < 64+160 {
		return nil, nil, errors.New("sesttest: short request")
	}
	nks := int(arcb[39])
	point := append(append([]byte{4}, arcb[64+14:64+80]...), arcb[64+80+14:64+160]...)
	cust, err := ecdh.P521().NewPublicKey(point)
	if err != nil {
		return nil, nil, err
	}
	phkh := se.PHKH(u.HostKey.PublicKey())
	slots := arcb[64+160:]
	encStart := 64 + 160 + nks*80
	var prot []byte
	for i := range nks {
		s := slots[i*80 : (i+1)*80]
		if string(s[:32]) != string(phkh) {
			continue
		}
		shared, err := u.HostKey.ECDH(cust)
		if err != nil {
			return nil, nil, err
		}
		k := sha256.Sum256(append(shared, 0, 0, 0, 1))
		if prot, err = open(k[:], make([]byte, 12), s[32:], nil); err != nil {
			return nil, nil, err
		}
	}
	if prot == nil {
		return nil, nil, ErrNoKeySlot
	}
	conf, err := open(prot, arcb[16:28], arcb[encStart:], arcb[:encStart])
	if err != nil {
		return nil, nil, err
	}
	additional = append(append([]byte(nil), phkh...), phkh...)
	return se.Measurement(conf[:64], &u.Tags, u.CUID, user, conf[64:80], additional), additional, nil
}

func open(key, iv, box, aad []byte) ([]byte, error) {
	g, err := se.NewGCM(key)
	if err != nil {
		return nil, err
	}
	return g.Open(nil, iv, box, aad)
}

// Respond is the guest's evidence for challenge (the KBS's nonce, an SE
// challenge JSON) carrying reportData as user data.
func (u *Ultravisor) Respond(challenge string, reportData []byte) (*se.Response, error) {
	var c se.Challenge
	if err := json.Unmarshal([]byte(challenge), &c); err != nil {
		return nil, err
	}
	m, add, err := u.Attest(c.RequestBlob, reportData)
	if err != nil {
		return nil, err
	}
	return &se.Response{Measurement: m, AdditionalData: add, UserData: reportData, CUID: u.CUID,
		EncrMeasurementKey: c.EncrMeasurementKey, EncrRequestNonce: c.EncrRequestNonce, Tags: u.Tags}, nil
}

// Attester is an SE guest: it answers the KBS's challenge through the
// Ultravisor.
type Attester struct{ UV *Ultravisor }

// Tee implements attester.Attester.
func (Attester) Tee() protocol.Tee { return protocol.TeeSE }

// Evidence implements attester.Attester; SE evidence needs the challenge.
func (Attester) Evidence(context.Context, []byte) (json.RawMessage, error) {
	return nil, errors.New("sesttest: SE evidence answers a challenge")
}

// EvidenceFor implements attester.Challenged.
func (a Attester) EvidenceFor(_ context.Context, challenge string, reportData []byte) (json.RawMessage, error) {
	r, err := a.UV.Respond(challenge, reportData)
	if err != nil {
		return nil, err
	}
	return r.MarshalJSON()
}
