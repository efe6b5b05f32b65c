package snp

import (
	"bytes"
	"crypto/x509"
	"fmt"
	"sync"

	"github.com/google/go-sev-guest/verify/trust"
)

// roots are AMD's certificates for one product: the self-signed ARK, the
// ASK that signs VCEKs and the ASVK that signs VLEKs.
type roots struct {
	product        Product
	ark, ask, asvk *x509.Certificate
}

// builtinRoots parses the KDS cert_chain bundles go-sev-guest embeds (the
// same certificates Trustee embeds) and checks that they chain.
var builtinRoots = sync.OnceValues(func() (map[Product]*roots, error) {
	bundles := []struct {
		p          Product
		vcek, vlek []byte
	}{
		{Milan, trust.AskArkMilanVcekBytes, trust.AskArkMilanVlekBytes},
		{Genoa, trust.AskArkGenoaVcekBytes, trust.AskArkGenoaVlekBytes},
		{Turin, trust.AskArkTurinVcekBytes, trust.AskArkTurinVlekBytes},
	}
	out := map[Product]*roots{}
	for _, b := range bundles {
		r, err := loadRoots(b.p, b.vcek, b.vlek)
		if err != nil {
			return nil, fmt.Errorf("built-in %v roots: %w", b.p, err)
		}
		out[b.p] = r
	}
	return out, nil
})

func loadRoots(p Product, vcekBundle, vlekBundle []byte) (*roots, error) {
	ask, ark, err := parseBundle(vcekBundle)
	if err != nil {
		return nil, err
	}
	asvk, ark2, err := parseBundle(vlekBundle)
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(ark.Raw, ark2.Raw) {
		return nil, fmt.Errorf("VCEK and VLEK bundles have different ARKs")
	}
	return checkRoots(&roots{product: p, ark: ark, ask: ask, asvk: asvk})
}

// parseRoots reads Options.Roots: the products whose ARK is there, each
// with its ASK and, if there, its ASVK.
func parseRoots(pems []byte) (map[Product]*roots, error) {
	ders, ok := pemCertificates(pems)
	if !ok {
		return nil, fmt.Errorf("%w: roots: not PEM certificates", ErrCertificate)
	}
	byName := map[string]*x509.Certificate{}
	for _, der := range ders {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, fmt.Errorf("%w: roots: %v", ErrCertificate, err)
		}
		if byName[c.Subject.CommonName] != nil {
			return nil, fmt.Errorf("%w: roots: two certificates named %q", ErrCertificate, c.Subject.CommonName)
		}
		byName[c.Subject.CommonName] = c
	}
	out := map[Product]*roots{}
	for p := Milan; p <= Turin; p++ {
		ark := byName["ARK-"+p.String()]
		if ark == nil {
			continue
		}
		r, err := checkRoots(&roots{product: p, ark: ark, ask: byName["SEV-"+p.String()], asvk: byName["SEV-VLEK-"+p.String()]})
		if err != nil {
			return nil, fmt.Errorf("%w: roots: %v", ErrCertificate, err)
		}
		out[p] = r
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: roots: no ARK-<product> certificate", ErrCertificate)
	}
	return out, nil
}

// checkRoots checks the names of r's certificates and that the ARK signed
// itself and them. The ASVK may be missing: VLEKs are then refused.
func checkRoots(r *roots) (*roots, error) {
	for _, c := range []struct {
		cert   *x509.Certificate
		prefix string
	}{{r.ark, "ARK-"}, {r.ask, "SEV-"}, {r.asvk, "SEV-VLEK-"}} {
		cn := c.prefix + r.product.String()
		switch {
		case c.cert == nil && c.prefix == "SEV-VLEK-":
			continue
		case c.cert == nil:
			return nil, fmt.Errorf("no certificate %q", cn)
		case c.cert.Subject.CommonName != cn:
			return nil, fmt.Errorf("certificate %q, want %q", c.cert.Subject.CommonName, cn)
		}
		if err := c.cert.CheckSignatureFrom(r.ark); err != nil {
			return nil, fmt.Errorf("%s: %v", cn, err)
		}
	}
	return r, nil
}

func parseBundle(pems []byte) (ica, ark *x509.Certificate, err error) {
	icaDER, arkDER, err := parseCertChainPEM(pems)
	if err != nil {
		return nil, nil, err
	}
	if ica, err = x509.ParseCertificate(icaDER); err != nil {
		return nil, nil, err
	}
	if ark, err = x509.ParseCertificate(arkDER); err != nil {
		return nil, nil, err
	}
	return ica, ark, nil
}
