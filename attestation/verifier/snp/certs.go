package snp

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/google/go-sev-guest/abi"
)

// CertChain holds DER certificates that may endorse a report. Any member may
// be empty; the verifier fills gaps from the certificate directory, the KDS
// and its built-in AMD roots.
type CertChain struct {
	ARK  []byte // AMD root key
	ASK  []byte // AMD SEV key: the ASK for a VCEK, the ASVK for a VLEK
	VCEK []byte // versioned chip endorsement key
	VLEK []byte // versioned loaded endorsement key
}

func (c CertChain) endorsementKey(s abi.ReportSigner) []byte {
	if s == abi.VlekReportSigner {
		return c.VLEK
	}
	return c.VCEK
}

// certChainFromJSON reads the sev crate's Option<Vec<CertTableEntry>>. As in
// Trustee, the first VCEK or VLEK wins; CRL, Empty and OTHER entries are
// ignored.
func certChainFromJSON(v json.RawMessage) (CertChain, error) {
	var c CertChain
	if len(v) == 0 || isNull(v) {
		return c, nil
	}
	var entries []map[string]json.RawMessage
	if err := json.Unmarshal(v, &entries); err != nil {
		return c, err
	}
	for i, e := range entries {
		slot, err := certSlot(&c, e["cert_type"])
		if err != nil {
			return c, fmt.Errorf("entry %d: %v", i, err)
		}
		data, ok := e["data"]
		if !ok {
			return c, fmt.Errorf("entry %d: missing field data", i)
		}
		der, err := jsonBytes(data, -1)
		if err != nil {
			return c, fmt.Errorf("entry %d: data: %v", i, err)
		}
		if slot != nil && *slot == nil {
			*slot = der
		}
	}
	return c, nil
}

// certSlot returns where an entry of the given cert_type goes, or nil for
// types the verifier does not use.
func certSlot(c *CertChain, t json.RawMessage) (*[]byte, error) {
	var name string
	if err := json.Unmarshal(t, &name); err != nil {
		// OTHER(uuid) is serialized as {"OTHER":"<uuid>"}.
		var other map[string]string
		if err := json.Unmarshal(t, &other); err != nil || len(other) != 1 || other["OTHER"] == "" {
			return nil, fmt.Errorf("bad cert_type %.40s", t)
		}
		return nil, nil
	}
	switch name {
	case "ARK":
		return &c.ARK, nil
	case "ASK":
		return &c.ASK, nil
	case "VCEK":
		return &c.VCEK, nil
	case "VLEK":
		return &c.VLEK, nil
	case "CRL", "Empty":
		return nil, nil
	}
	return nil, fmt.Errorf("unknown cert_type %q", name)
}

func certChainToJSON(b *bytes.Buffer, c CertChain) {
	n := 0
	for _, e := range []struct {
		name string
		der  []byte
	}{{"ARK", c.ARK}, {"ASK", c.ASK}, {"VCEK", c.VCEK}, {"VLEK", c.VLEK}} {
		if len(e.der) == 0 {
			continue
		}
		if n == 0 {
			b.WriteByte('[')
		} else {
			b.WriteByte(',')
		}
		n++
		fmt.Fprintf(b, `{"cert_type":%q,"data":`, e.name)
		writeBytes(b, e.der)
		b.WriteByte('}')
	}
	if n == 0 {
		b.WriteString("null")
		return
	}
	b.WriteByte(']')
}

// toDER accepts a certificate in DER or as a single PEM CERTIFICATE block.
func toDER(b []byte) ([]byte, error) {
	if !bytes.HasPrefix(bytes.TrimSpace(b), []byte("-----BEGIN")) {
		return b, nil
	}
	block, rest := pem.Decode(b)
	if block == nil || block.Type != "CERTIFICATE" || len(bytes.TrimSpace(rest)) != 0 {
		return nil, fmt.Errorf("%w: want one PEM CERTIFICATE block", ErrCertificate)
	}
	return block.Bytes, nil
}

// storePath is where Trustee's offline KDS store and the KDS cache keep the
// VCEK for a report: vcek/<hwid>/<tcb>_vcek.der.
func storePath(r *Report) string {
	return filepath.Join("vcek", hex.EncodeToString(r.kdsHWID()),
		r.ReportedTCB().storeName(r.turin())+"_vcek.der")
}

// readCertDir fills the gaps of have from dir, which may be laid out as
// snpguest writes certificates (vcek.der|pem, vlek.der|pem, ask.pem,
// asvk.pem, ark.pem, cert_chain.pem) or as Trustee's offline KDS store
// (vcek/<hwid>/[<tcb>_]vcek.der).
func readCertDir(dir string, r *Report, have CertChain) (CertChain, error) {
	c := have
	var err error
	if len(c.endorsementKey(r.Signer())) == 0 {
		var names []string
		var slot *[]byte
		if r.Signer() == abi.VlekReportSigner {
			names, slot = []string{"vlek.der", "vlek.pem"}, &c.VLEK
		} else {
			store := storePath(r)
			names = []string{store, filepath.Join(filepath.Dir(store), "vcek.der"), "vcek.der", "vcek.pem"}
			slot = &c.VCEK
		}
		if *slot, err = readFirst(dir, names...); err != nil {
			return have, err
		}
	}
	if len(c.ASK) == 0 {
		names := []string{"ask.pem", "ask.der"}
		if r.Signer() == abi.VlekReportSigner {
			names = append([]string{"asvk.pem", "asvk.der"}, names...)
		}
		if c.ASK, err = readFirst(dir, names...); err != nil {
			return have, err
		}
	}
	if len(c.ARK) == 0 {
		if c.ARK, err = readFirst(dir, "ark.pem", "ark.der"); err != nil {
			return have, err
		}
	}
	return fillFromKDSChain(dir, c)
}

// fillFromKDSChain reads cert_chain.pem, the KDS's ASK-then-ARK bundle.
func fillFromKDSChain(dir string, c CertChain) (CertChain, error) {
	if len(c.ASK) != 0 && len(c.ARK) != 0 {
		return c, nil
	}
	pems, err := readFile(filepath.Join(dir, "cert_chain.pem"))
	if pems == nil || err != nil {
		return c, err
	}
	ask, ark, err := parseCertChainPEM(pems)
	if err != nil {
		return c, fmt.Errorf("cert_chain.pem: %w", err)
	}
	if len(c.ASK) == 0 {
		c.ASK = ask
	}
	if len(c.ARK) == 0 {
		c.ARK = ark
	}
	return c, nil
}

// parseCertChainPEM reads the KDS cert_chain form: the ASK (or ASVK) then
// the ARK, as PEM CERTIFICATE blocks. Unlike go-sev-guest's parser it
// accepts trailing whitespace, which some of AMD's files end with.
func parseCertChainPEM(b []byte) (ica, ark []byte, err error) {
	ders, ok := pemCertificates(b)
	if !ok {
		return nil, nil, fmt.Errorf("%w: not a PEM CERTIFICATE chain", ErrCertificate)
	}
	if len(ders) != 2 {
		return nil, nil, fmt.Errorf("%w: %d certificates in the chain, want ASK and ARK", ErrCertificate, len(ders))
	}
	return ders[0], ders[1], nil
}

// pemCertificates returns the DER of b's PEM CERTIFICATE blocks; false
// when b holds anything else but trailing whitespace.
func pemCertificates(b []byte) ([][]byte, bool) {
	var ders [][]byte
	for rest := b; len(bytes.TrimSpace(rest)) != 0; {
		var block *pem.Block
		if block, rest = pem.Decode(rest); block == nil || block.Type != "CERTIFICATE" {
			return nil, false
		}
		ders = append(ders, block.Bytes)
	}
	return ders, true
}

// readFirst returns the first of the named files that exists, as DER.
func readFirst(dir string, names ...string) ([]byte, error) {
	for _, name := range names {
		b, err := readFile(filepath.Join(dir, name))
		if err != nil {
			return nil, err
		}
		if b != nil {
			der, err := toDER(b)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", name, err)
			}
			return der, nil
		}
	}
	return nil, nil
}

// readFile returns nil, nil for a missing file; any other failure (such as
// a permission error) is reported rather than taken for absence.
func readFile(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCertDir, err)
	}
	return b, nil
}
