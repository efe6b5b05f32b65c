package dcap

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
)

// Getter fetches collateral over HTTP. It returns the headers and body of
// a 200 response and an error for anything else.
type Getter interface {
	Get(ctx context.Context, url string) (http.Header, []byte, error)
}

// HTTPGetter is the default Getter. A nil Client is http.DefaultClient.
type HTTPGetter struct {
	Client *http.Client
}

// maxCollateralSize bounds a collateral response; real ones are a few KiB.
const maxCollateralSize = 4 << 20

// Get implements Getter.
func (g HTTPGetter) Get(ctx context.Context, u string) (http.Header, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, nil, err
	}
	client := g.Client
	if client == nil {
		client = http.DefaultClient
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, nil, fmt.Errorf("GET %s: %s", u, resp.Status)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxCollateralSize))
	return resp.Header, body, err
}

// collateralSource fetches the unverified collateral of one platform.
type collateralSource interface {
	fetch(ctx context.Context, tee TEE, fmspc []byte, ca string) (*rawCollateral, error)
}

// pcsSource fetches from Intel PCS or a PCCS, which share the v4 API.
type pcsSource struct {
	base       string // scheme://host[:port], no trailing slash
	update     string // "early" or "standard"
	rootCRLURL string
	getter     Getter
}

// Issuer chain headers of the v4 API; older PCCS releases send the SGX- one.
var (
	tcbInfoChainHeaders    = []string{"TCB-Info-Issuer-Chain", "SGX-TCB-Info-Issuer-Chain"}
	qeIdentityChainHeaders = []string{"SGX-Enclave-Identity-Issuer-Chain"}
)

func (s *pcsSource) fetch(ctx context.Context, tee TEE, fmspc []byte, ca string) (*rawCollateral, error) {
	var raw rawCollateral
	var err error
	tcbURL := fmt.Sprintf("%s/%s/certification/v4/tcb?fmspc=%X&update=%s", s.base, tee, fmspc, s.update)
	if raw.tcbInfo, err = s.getSigned(ctx, tcbURL, tcbInfoChainHeaders); err != nil {
		return nil, err
	}
	qeURL := fmt.Sprintf("%s/%s/certification/v4/qe/identity?update=%s", s.base, tee, s.update)
	if raw.qeIdentity, err = s.getSigned(ctx, qeURL, qeIdentityChainHeaders); err != nil {
		return nil, err
	}
	pckURL := fmt.Sprintf("%s/sgx/certification/v4/pckcrl?ca=%s&encoding=der", s.base, ca)
	if raw.pckCRL, err = s.get(ctx, pckURL); err != nil {
		return nil, err
	}
	if raw.rootCACRL, err = s.get(ctx, s.rootCRLURL); err != nil {
		return nil, err
	}
	return &raw, nil
}

func (s *pcsSource) getSigned(ctx context.Context, u string, chainHeaders []string) (response, error) {
	h, body, err := s.getter.Get(ctx, u)
	if err != nil {
		return response{}, fmt.Errorf("%w: %v", ErrCollateralUnavailable, err)
	}
	for _, name := range chainHeaders {
		if v := h.Get(name); v != "" {
			return response{body: body, issuerChain: []byte(v)}, nil
		}
	}
	return response{}, fmt.Errorf("%w: %s: no issuer chain header", ErrCollateralUnavailable, u)
}

func (s *pcsSource) get(ctx context.Context, u string) ([]byte, error) {
	_, body, err := s.getter.Get(ctx, u)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCollateralUnavailable, err)
	}
	return body, nil
}

// unescapeChain undoes the URL encoding PCS applies to issuer chain
// headers. Path unescaping keeps a literal '+' of base64 intact.
func unescapeChain(chain []byte) []byte {
	s, err := url.PathUnescape(string(chain))
	if err != nil {
		return chain
	}
	return []byte(s)
}

// dirSource reads saved PCS responses from a directory, named as
// Options.CollateralDir describes.
type dirSource struct {
	dir string
}

func (s dirSource) fetch(_ context.Context, tee TEE, fmspc []byte, ca string) (*rawCollateral, error) {
	var raw rawCollateral
	var err error
	if raw.tcbInfo, err = s.readSigned(fmt.Sprintf("%stcb-info-%X.json", tee.filePrefix(), fmspc)); err != nil {
		return nil, err
	}
	if raw.qeIdentity, err = s.readSigned(tee.filePrefix() + "qe-identity.json"); err != nil {
		return nil, err
	}
	if raw.pckCRL, err = s.read("pck-crl-" + ca + ".der"); err != nil {
		return nil, err
	}
	if raw.rootCACRL, err = s.read("root-ca-crl.der"); err != nil {
		return nil, err
	}
	return &raw, nil
}

func (s dirSource) readSigned(name string) (response, error) {
	body, err := s.read(name)
	if err != nil {
		return response{}, err
	}
	chain, err := s.read(name + ".issuer-chain")
	if err != nil {
		return response{}, err
	}
	return response{body: body, issuerChain: chain}, nil
}

func (s dirSource) read(name string) ([]byte, error) {
	b, err := os.ReadFile(filepath.Join(s.dir, name))
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCollateralUnavailable, err)
	}
	return b, nil
}
