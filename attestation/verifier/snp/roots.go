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
	r := &roots{product: p, ark: ark, ask: ask, asvk: asvk}
	checks := []struct {
		cert, parent *x509.Certificate
		cn           string
	}{{ark, ark, "ARK-" + p.String()}, {ask, ark, "SEV-" + p.String()}, {asvk, ark, "SEV-VLEK-" + p.String()}}
	for _, c := range checks {
		if c.cert.Subject.CommonName != c.cn {
			return nil, fmt.Errorf("certificate %q, want %q", c.cert.Subject.CommonName, c.cn)
		}
		if err := c.cert.CheckSignatureFrom(c.parent); err != nil {
			return nil, fmt.Errorf("%s: %v", c.cn, err)
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
