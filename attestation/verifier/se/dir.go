package se

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

// LoadDir reads the layout Trustee's SE verifier reads from
// /run/confidential-containers/ibmse: hkds/ (host-key documents), certs/
// (IBM's signing key and intermediate CA), crls/, hdr/hdr.bin (the SE
// image header) and, optionally, root_ca.crt (else the system's roots) and
// seal.key (32 bytes sealing the requests' secrets; without it they are
// sealed with a key of the process, so only that process can verify the
// answers). The host-key documents are verified at now.
func LoadDir(dir string, now time.Time) (Options, error) {
	var o Options
	hkds, err := readCerts(filepath.Join(dir, "hkds"))
	if err != nil {
		return o, err
	}
	e := Endorsements{}
	if e.Certs, err = readCerts(filepath.Join(dir, "certs")); err != nil {
		return o, err
	}
	if e.CRLs, err = readCRLs(filepath.Join(dir, "crls")); err != nil {
		return o, err
	}
	if e.Roots, err = roots(filepath.Join(dir, "root_ca.crt")); err != nil {
		return o, err
	}
	if o.HostKeys, err = VerifyHostKeys(hkds, e, now); err != nil {
		return o, err
	}
	hdr, err := os.ReadFile(filepath.Join(dir, "hdr", "hdr.bin"))
	if err != nil {
		return o, fmt.Errorf("%w: %v", ErrConfig, err)
	}
	if o.Tags, err = ParseHeader(hdr); err != nil {
		return o, err
	}
	o.SealKey, err = os.ReadFile(filepath.Join(dir, "seal.key"))
	if errors.Is(err, fs.ErrNotExist) {
		return o, nil
	}
	if err == nil && len(o.SealKey) != 32 {
		err = fmt.Errorf("seal.key has %d bytes, want 32", len(o.SealKey))
	}
	if err != nil {
		return o, fmt.Errorf("%w: %v", ErrConfig, err)
	}
	return o, nil
}

func roots(path string) (*x509.CertPool, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		p, err := x509.SystemCertPool()
		if err != nil {
			return nil, fmt.Errorf("%w: system roots: %v", ErrConfig, err)
		}
		return p, nil
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrConfig, err)
	}
	certs, err := parseAll(b, "CERTIFICATE", x509.ParseCertificate)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrConfig, path, err)
	}
	p := x509.NewCertPool()
	for _, c := range certs {
		p.AddCert(c)
	}
	return p, nil
}

// readDir returns the contents of the files of dir.
func readDir(dir string) ([][]byte, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrConfig, err)
	}
	var out [][]byte
	for _, e := range ents {
		if !e.Type().IsRegular() {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrConfig, err)
		}
		out = append(out, b)
	}
	return out, nil
}

func readCerts(dir string) ([]*x509.Certificate, error) {
	return readAll(dir, "CERTIFICATE", x509.ParseCertificate)
}

func readCRLs(dir string) ([]*x509.RevocationList, error) {
	return readAll(dir, "X509 CRL", x509.ParseRevocationList)
}

// readAll parses every PEM block of type typ (or DER file) of dir.
func readAll[T any](dir, typ string, parse func([]byte) (T, error)) ([]T, error) {
	files, err := readDir(dir)
	if err != nil {
		return nil, err
	}
	var out []T
	for _, b := range files {
		items, err := parseAll(b, typ, parse)
		if err != nil {
			return nil, fmt.Errorf("%w: %s: %v", ErrConfig, dir, err)
		}
		out = append(out, items...)
	}
	return out, nil
}

func parseAll[T any](b []byte, typ string, parse func([]byte) (T, error)) ([]T, error) {
	var out []T
	for _, der := range pemOrDER(b, typ) {
		v, err := parse(der)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, nil
}

// pemOrDER returns the PEM blocks of type typ in b, or b itself as DER
// when it holds no PEM.
func pemOrDER(b []byte, typ string) [][]byte {
	var out [][]byte
	rest := b
	for {
		var blk *pem.Block
		blk, rest = pem.Decode(rest)
		if blk == nil {
			break
		}
		if blk.Type == typ {
			out = append(out, blk.Bytes)
		}
	}
	if out == nil {
		out = [][]byte{b}
	}
	return out
}
