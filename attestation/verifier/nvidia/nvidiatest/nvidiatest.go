// Package nvidiatest makes NVIDIA GPU evidence for tests: a real Hopper
// measurement report with a new nonce, signed by a test attestation key
// whose chain ends in a test root (trusted through the verifier's
// Options.Roots). It is the live-nonce path no captured report can take.
package nvidiatest

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha512"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"time"

	"golang.org/x/crypto/ocsp"

	"github.com/cocoon-cc/cocoon/attestation/verifier"
	"github.com/cocoon-cc/cocoon/attestation/verifier/nvidia"
	"github.com/cocoon-cc/cocoon/protocol"
)

// GPU signs reports as a test GPU.
type GPU struct {
	// Report is the report to re-issue (its nonce and signature change).
	Report []byte
	// Chain is the PEM chain: attestation key, intermediate, root.
	Chain []byte
	// Root is the test root, for nvidia.Options.Roots.
	Root *x509.Certificate
	Key  *ecdsa.PrivateKey
	// Certs and Keys are the chain's certificates and keys, attestation
	// key first.
	Certs []*x509.Certificate
	Keys  []*ecdsa.PrivateKey
}

// Validity of the test certificates.
type Validity struct{ NotBefore, NotAfter time.Time }

// New makes a test GPU whose attestation key certificate names the
// report's FWID and is valid for leaf (the CAs for ten years around now).
func New(report []byte, leaf Validity) (*GPU, error) {
	r, err := nvidia.ParseReport(report)
	if err != nil {
		return nil, err
	}
	fwid, _ := hex.DecodeString(r.FWID)
	now := time.Now()
	ca := Validity{now.AddDate(-5, 0, 0), now.AddDate(5, 0, 0)}
	rootKey, root, err := issue("Test Device Identity CA", nil, nil, ca, nil)
	if err != nil {
		return nil, err
	}
	icaKey, ica, err := issue("Test GH100 Identity", root, rootKey, ca, nil)
	if err != nil {
		return nil, err
	}
	key, cert, err := issue("Test GH100 GSP FMC LF", ica, icaKey, leaf, fwid)
	if err != nil {
		return nil, err
	}
	var chain []byte
	for _, c := range []*x509.Certificate{cert, ica, root} {
		chain = append(chain, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return &GPU{Report: report, Chain: chain, Root: root, Key: key,
		Certs: []*x509.Certificate{cert, ica, root}, Keys: []*ecdsa.PrivateKey{key, icaKey, rootKey}}, nil
}

// issue makes a P-384 key and its certificate, self-signed when parent is
// nil, with the FWID extension when fwid is given (a leaf).
func issue(cn string, parent *x509.Certificate, parentKey *ecdsa.PrivateKey, v Validity, fwid []byte) (*ecdsa.PrivateKey, *x509.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	sn, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 64))
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{SerialNumber: sn, Subject: pkix.Name{CommonName: cn, Organization: []string{"Test"}},
		NotBefore: v.NotBefore, NotAfter: v.NotAfter, BasicConstraintsValid: true}
	if fwid == nil {
		tmpl.IsCA, tmpl.KeyUsage = true, x509.KeyUsageCertSign
	} else {
		tmpl.KeyUsage = x509.KeyUsageDigitalSignature
		ext, err := fwidExtension(&key.PublicKey, fwid)
		if err != nil {
			return nil, nil, err
		}
		tmpl.ExtraExtensions = []pkix.Extension{ext}
	}
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		return nil, nil, err
	}
	c, err := x509.ParseCertificate(der)
	return key, c, err
}

// fwidExtension is the form NVIDIA's attestation key certificates use.
func fwidExtension(pub *ecdsa.PublicKey, fwid []byte) (pkix.Extension, error) {
	spki, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return pkix.Extension{}, err
	}
	v, err := asn1.Marshal(struct {
		Version int
		Key     asn1.RawValue
		FWID    struct {
			Alg    asn1.ObjectIdentifier
			Digest []byte
		}
	}{1, asn1.RawValue{FullBytes: spki}, struct {
		Alg    asn1.ObjectIdentifier
		Digest []byte
	}{asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 2, 2}, fwid}})
	return pkix.Extension{Id: asn1.ObjectIdentifier{2, 23, 133, 5, 4, 1}, Value: v}, err
}

// Sign re-issues the report for nonce (32 bytes).
func (g *GPU) Sign(nonce []byte) ([]byte, error) {
	if len(nonce) != nvidia.NonceSize {
		return nil, errors.New("nvidiatest: nonce must be 32 bytes")
	}
	r, err := nvidia.ParseReport(g.Report)
	if err != nil {
		return nil, err
	}
	out := append([]byte{}, g.Report...)
	copy(out[4:], nonce)
	signed := out[:len(r.Signed)]
	d := sha512.Sum384(signed)
	sr, ss, err := ecdsa.Sign(rand.Reader, g.Key, d[:])
	if err != nil {
		return nil, err
	}
	sr.FillBytes(out[len(signed) : len(signed)+48])
	ss.FillBytes(out[len(signed)+48:])
	return out, nil
}

// Device is the device evidence for report.
func (g *GPU) Device(report []byte) nvidia.Device {
	return nvidia.Device{Arch: "HOPPER", UUID: "GPU-test", Evidence: hex.EncodeToString(report),
		Certificate: base64.StdEncoding.EncodeToString(g.Chain)}
}

// Tee is nvidia.
func (g *GPU) Tee() protocol.Tee { return protocol.TeeNvidia }

// Evidence signs a report whose nonce is the report data's first 32 bytes,
// as guest-components' NVIDIA attester takes it.
func (g *GPU) Evidence(_ context.Context, reportData []byte) (json.RawMessage, error) {
	report, err := g.Sign(verifier.Fit(reportData, nvidia.NonceSize))
	if err != nil {
		return nil, fmt.Errorf("nvidiatest: %w", err)
	}
	return json.Marshal(nvidia.Evidence{Devices: []nvidia.Device{g.Device(report)}})
}

// OCSP answers OCSP requests about the chain's certificates as their
// issuers; a certificate revoked says so is revoked.
func (g *GPU) OCSP(revoked func(*x509.Certificate) bool) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<16))
		req, err := ocsp.ParseRequest(body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		for i, c := range g.Certs[:len(g.Certs)-1] {
			if c.SerialNumber.Cmp(req.SerialNumber) != 0 {
				continue
			}
			now := time.Now()
			tmpl := ocsp.Response{Status: ocsp.Good, SerialNumber: c.SerialNumber, ThisUpdate: now.Add(-time.Minute), NextUpdate: now.Add(time.Hour)}
			if revoked(c) {
				tmpl.Status, tmpl.RevokedAt = ocsp.Revoked, now.Add(-time.Hour)
			}
			out, err := ocsp.CreateResponse(g.Certs[i+1], g.Certs[i+1], tmpl, g.Keys[i+1])
			if err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
			w.Header().Set("Content-Type", "application/ocsp-response")
			w.Write(out)
			return
		}
		w.Write(ocsp.UnauthorizedErrorResponse)
	})
}
