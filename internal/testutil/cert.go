package testutil

import (
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"testing"
)

// Certificate signs tmpl for pub with signer, the key of parent (tmpl
// itself for a self-signed one), and parses it back.
func Certificate(t testing.TB, tmpl, parent *x509.Certificate, pub crypto.PublicKey, signer crypto.Signer) *x509.Certificate {
	t.Helper()
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, signer)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}
