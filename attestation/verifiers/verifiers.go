// Package verifiers wires the TEE verifiers Cocoon ships into a registry.
package verifiers

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"time"

	"github.com/cocoon-cc/cocoon/attestation/verifier"
	"github.com/cocoon-cc/cocoon/attestation/verifier/azsnpvtpm"
	"github.com/cocoon-cc/cocoon/attestation/verifier/aztdxvtpm"
	"github.com/cocoon-cc/cocoon/attestation/verifier/cca"
	"github.com/cocoon-cc/cocoon/attestation/verifier/csv"
	"github.com/cocoon-cc/cocoon/attestation/verifier/dcap"
	"github.com/cocoon-cc/cocoon/attestation/verifier/nvidia"
	"github.com/cocoon-cc/cocoon/attestation/verifier/sample"
	"github.com/cocoon-cc/cocoon/attestation/verifier/se"
	"github.com/cocoon-cc/cocoon/attestation/verifier/sgx"
	"github.com/cocoon-cc/cocoon/attestation/verifier/snp"
	"github.com/cocoon-cc/cocoon/attestation/verifier/tdx"
	"github.com/cocoon-cc/cocoon/attestation/verifier/tpm"
	"github.com/cocoon-cc/cocoon/protocol"
)

// Options configure every verifier at once.
type Options struct {
	// Now is the verification time (old evidence); time.Now when nil.
	Now func() time.Time `toml:"-"`
	// Offline keeps the verifiers off the network: endorsements and
	// collateral come from the evidence and the directories below only.
	Offline bool `toml:"offline"`
	// SNPCertDir holds SNP endorsement keys (vcek.der, ask.pem, ark.pem, ...).
	SNPCertDir string `toml:"snp_cert_dir"`
	// SNPCacheDir keeps VCEKs fetched from AMD's KDS.
	SNPCacheDir string `toml:"snp_cache_dir"`
	// SNPRoots is a PEM file of ARKs and ASKs trusted instead of AMD's
	// (snp.Options.Roots): AMD's pre-production parts, test chains.
	SNPRoots string `toml:"snp_roots"`
	// TDXCollateralDir holds saved Intel PCS responses.
	TDXCollateralDir string `toml:"tdx_collateral_dir"`
	// TDXCollateralURL is a PCCS to use instead of Intel's PCS.
	TDXCollateralURL string `toml:"tdx_collateral_url"`
	// CCAStoreDir holds the CCA trust anchor and reference value stores
	// (tastore.json, rvstore.json).
	CCAStoreDir string `toml:"cca_store_dir"`
	// CSVCertDir holds Hygon HSK/CEK pairs (hsk_cek/<chip>/hsk_cek.cert).
	CSVCertDir string `toml:"csv_cert_dir"`
	// CSVCacheDir keeps HSK/CEK pairs fetched from Hygon's KDS.
	CSVCacheDir string `toml:"csv_cache_dir"`
	// CSVHRK is a file holding the root certificate CSV chains must end
	// in, instead of Hygon's HRK: for test chips.
	CSVHRK string `toml:"csv_hrk"`
	// NvidiaRoots is a PEM file of device roots trusted instead of NVIDIA's
	// (test GPUs); NVIDIA's device root when empty.
	NvidiaRoots string `toml:"nvidia_roots"`
	// NvidiaOCSPURL is the OCSP responder asked about GPU certificates
	// (nvidia.NVIDIAOCSP is NVIDIA's); none when empty.
	NvidiaOCSPURL string `toml:"nvidia_ocsp_url"`
	// DCAPRootCA is a PEM file of the roots TDX and SGX PCK chains and
	// collateral must chain to, instead of Intel's SGX Root CA (Intel's
	// pre-production PCS, a test PKI).
	DCAPRootCA string `toml:"dcap_root_ca"`
	// SGXAllowDebug accepts SGX enclaves in debug mode.
	SGXAllowDebug bool `toml:"sgx_allow_debug"`
	// SEDir holds IBM SE's host-key documents, IBM's certificates, CRLs,
	// the image header and the seal key, in Trustee's layout (see
	// se.LoadDir). Without it there is no se verifier.
	SEDir string `toml:"se_dir"`
}

// New returns a registry of every built-in verifier.
func New(o Options) (verifier.Registry, error) {
	s, err := newSNP(o)
	if err != nil {
		return nil, err
	}
	dopts, err := o.dcap()
	if err != nil {
		return nil, err
	}
	t, err := tdx.New(dopts)
	if err != nil {
		return nil, err
	}
	sg, err := sgx.New(sgx.Options{DCAP: dopts, AllowDebug: o.SGXAllowDebug})
	if err != nil {
		return nil, err
	}
	c, err := newCSV(o)
	if err != nil {
		return nil, err
	}
	cc, err := newCCA(o)
	if err != nil {
		return nil, err
	}
	nv, err := newNvidia(o)
	if err != nil {
		return nil, err
	}
	reg := verifier.Registry{
		protocol.TeeSample: sample.Verifier{},
		protocol.TeeCCA:    cc,
		protocol.TeeNvidia: nv,
		protocol.TeeSNP:    s,
		protocol.TeeTDX:    t,
		protocol.TeeSGX:    sg,
		// Azure's confidential VMs share the SNP and TDX verifiers' roots,
		// endorsements and caches.
		protocol.TeeAzSNPvTPM: azsnpvtpm.New(s),
		protocol.TeeAzTDXvTPM: aztdxvtpm.New(t),
		protocol.TeeTPM:       tpm.New(tpm.Options{Now: o.Now}),
		protocol.TeeCSV:       c,
	}
	if o.SEDir != "" {
		if reg[protocol.TeeSE], err = newSE(o); err != nil {
			return nil, err
		}
	}
	return reg, nil
}

func newSNP(o Options) (*snp.Verifier, error) {
	so := snp.Options{Now: o.Now, CertDir: o.SNPCertDir, CacheDir: o.SNPCacheDir, DisableKDS: o.Offline}
	if o.SNPRoots != "" {
		var err error
		if so.Roots, err = os.ReadFile(o.SNPRoots); err != nil {
			return nil, fmt.Errorf("snp_roots: %w", err)
		}
	}
	return snp.New(so)
}

func newSE(o Options) (*se.Verifier, error) {
	now := time.Now
	if o.Now != nil {
		now = o.Now
	}
	so, err := se.LoadDir(o.SEDir, now())
	if err != nil {
		return nil, fmt.Errorf("se_dir: %w", err)
	}
	return se.New(so)
}

func newCSV(o Options) (*csv.Verifier, error) {
	co := csv.Options{CertDir: o.CSVCertDir, CacheDir: o.CSVCacheDir, DisableKDS: o.Offline}
	if o.CSVHRK != "" {
		var err error
		if co.HRK, err = os.ReadFile(o.CSVHRK); err != nil {
			return nil, fmt.Errorf("csv_hrk: %w", err)
		}
	}
	return csv.New(co)
}

// dcap is the configuration TDX and SGX share.
func (o *Options) dcap() (dcap.Options, error) {
	d := dcap.Options{Now: o.Now, CollateralDir: o.TDXCollateralDir, CollateralURL: o.TDXCollateralURL}
	if o.Offline && o.TDXCollateralDir == "" {
		// No directory and no network: the verifier will say what is missing.
		d.Getter = offline{}
	}
	if o.DCAPRootCA != "" {
		pemData, err := os.ReadFile(o.DCAPRootCA)
		if err != nil {
			return d, fmt.Errorf("dcap_root_ca: %w", err)
		}
		if d.Roots, err = dcap.ParsePEMCerts(pemData); err != nil || len(d.Roots) == 0 {
			return d, fmt.Errorf("dcap_root_ca %s: no PEM certificates (%v)", o.DCAPRootCA, err)
		}
	}
	return d, nil
}

// ErrOffline is returned for collateral that would have to be fetched.
var ErrOffline = errors.New("offline: collateral not in the evidence nor the collateral directory")

type offline struct{}

func (offline) Get(_ context.Context, url string) (http.Header, []byte, error) {
	return nil, nil, fmt.Errorf("%w (%s)", ErrOffline, url)
}

// newCCA loads the CCA stores; without them every token is refused.
func newCCA(o Options) (*cca.Verifier, error) {
	var co cca.Options
	if o.CCAStoreDir != "" {
		var err error
		if co.TrustAnchors, co.ReferenceValues, err = cca.LoadDir(o.CCAStoreDir); err != nil {
			return nil, err
		}
	}
	return cca.New(co), nil
}

// newNvidia trusts NVIDIA's device root, or the roots of o.NvidiaRoots.
func newNvidia(o Options) (*nvidia.Verifier, error) {
	if o.Offline && o.NvidiaOCSPURL != "" {
		return nil, errors.New("nvidia_ocsp_url asks a responder: not with offline = true")
	}
	no := nvidia.Options{Now: o.Now, OCSPURL: o.NvidiaOCSPURL}
	if o.NvidiaRoots != "" {
		pem, err := os.ReadFile(o.NvidiaRoots)
		if err != nil {
			return nil, err
		}
		if no.Roots, err = nvidia.ParseChain(pem); err != nil {
			return nil, fmt.Errorf("nvidia_roots: %w", err)
		}
	}
	return nvidia.New(no), nil
}
