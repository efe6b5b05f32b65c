package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/cocoon-cc/cocoon/attestation"
	"github.com/cocoon-cc/cocoon/attestation/ear"
	"github.com/cocoon-cc/cocoon/attestation/verifier"
	"github.com/cocoon-cc/cocoon/attestation/verifier/cca"
	"github.com/cocoon-cc/cocoon/attestation/verifier/sgx"
	"github.com/cocoon-cc/cocoon/attestation/verifier/snp"
	"github.com/cocoon-cc/cocoon/attestation/verifier/tdx"
	"github.com/cocoon-cc/cocoon/attestation/verifiers"
	"github.com/cocoon-cc/cocoon/protocol"
	"github.com/cocoon-cc/cocoon/rvps"
	"github.com/cocoon-cc/cocoon/store/memory"
)

type verifyFlags struct {
	tee, evidence, reportData, initData, certs, collateral, eventLog string
	at, policy, refValues, dcapRoot, snpRoots, csvHRK                string
	online, json, sgxDebug                                           bool
}

func verifyCmd() *cobra.Command {
	f := &verifyFlags{}
	c := &cobra.Command{
		Use:   "verify --tee TEE --evidence FILE",
		Short: "Verify evidence offline and print its claims and appraisal",
		Long: `Verify TEE evidence as the attestation service would, without a server.

--evidence takes Trustee's JSON evidence (the primary_evidence a guest sends),
a whole KBS attestation message (its runtime data then gives the report data),
or the raw bytes the guest produced: an SNP report.bin (with --certs holding
ark/ask/vcek as snpguest writes them), a TDX or SGX quote (with --collateral
holding saved PCS responses) or a CCA token (CBOR; --certs holds the CCA trust
anchor and reference value stores, tastore.json and rvstore.json). The exit status is 0 only when the evidence is
cryptographically valid and every requested binding holds.`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error { return f.run(c.Context(), c.OutOrStdout()) },
	}
	fl := c.Flags()
	fl.StringVar(&f.tee, "tee", "", "TEE type: snp, tdx, sgx, tpm, sample, ...")
	fl.StringVar(&f.evidence, "evidence", "", "evidence file")
	fl.StringVar(&f.reportData, "report-data", "", "expected report data, hex (fitted to the TEE's field)")
	fl.StringVar(&f.initData, "init-data", "", "initdata TOML the TEE was launched with")
	fl.StringVar(&f.certs, "certs", "", "endorsements directory: SNP keys (vcek.der, ask.pem, ark.pem, ...), CSV HSK/CEK (hsk_cek.cert), CCA stores (tastore.json, rvstore.json), SE (hkds/, certs/, crls/, hdr/hdr.bin, seal.key)")
	fl.StringVar(&f.collateral, "collateral", "", "TDX and SGX collateral directory (saved PCS responses)")
	fl.StringVar(&f.dcapRoot, "dcap-root", "", "PEM roots of TDX and SGX chains instead of Intel's SGX Root CA")
	fl.StringVar(&f.snpRoots, "snp-roots", "", "PEM ARKs and ASKs trusted instead of AMD's (pre-production parts, test chains)")
	fl.StringVar(&f.csvHRK, "csv-hrk", "", "CSV root certificate (HRK) instead of Hygon's (test chips)")
	fl.BoolVar(&f.sgxDebug, "sgx-allow-debug", false, "accept SGX enclaves in debug mode")
	fl.StringVar(&f.eventLog, "event-log", "", "TDX CC event log (CCEL) to replay, with a raw quote")
	fl.StringVar(&f.at, "time", "", "verify at this time (RFC 3339) instead of now, for old evidence")
	fl.StringVar(&f.policy, "policy", "", "attestation policy (Rego) instead of the default")
	fl.StringVar(&f.refValues, "reference-values", "", "JSON object of reference values (name -> values) for the policy")
	fl.BoolVar(&f.online, "online", false, "fetch missing endorsements and collateral from AMD KDS / Intel PCS")
	fl.BoolVar(&f.json, "json", false, "print the result as JSON")
	c.MarkFlagRequired("tee")
	c.MarkFlagRequired("evidence")
	return c
}

func (f *verifyFlags) run(ctx context.Context, out io.Writer) error {
	tee, err := protocol.ParseTee(f.tee)
	if err != nil {
		return err
	}
	if err := f.checkDirs(); err != nil {
		return err
	}
	opts := verifiers.Options{Offline: !f.online, SNPCertDir: f.certs, CSVCertDir: f.certs, TDXCollateralDir: f.collateral,
		DCAPRootCA: f.dcapRoot, SNPRoots: f.snpRoots, CSVHRK: f.csvHRK, SGXAllowDebug: f.sgxDebug}
	switch tee {
	case protocol.TeeCCA:
		opts.SNPCertDir, opts.CCAStoreDir = "", f.certs
	case protocol.TeeSE:
		opts.SNPCertDir, opts.SEDir = "", f.certs
	}
	if f.at != "" {
		t, err := time.Parse(time.RFC3339, f.at)
		if err != nil {
			return fmt.Errorf("--time: %w", err)
		}
		opts.Now = func() time.Time { return t }
	}
	reg, err := verifiers.New(opts)
	if err != nil {
		return err
	}
	req, err := f.request(tee, reg)
	if err != nil {
		return err
	}
	svc, err := f.service(ctx, reg, opts.Now)
	if err != nil {
		return err
	}
	_, claims, err := svc.Evaluate(ctx, []attestation.Request{req}, "")
	if err != nil {
		return err
	}
	return printResult(out, claims, f.json)
}

// checkDirs refuses endorsement and collateral directories that are not
// there: verifying without them would fetch, or fail for another reason.
func (f *verifyFlags) checkDirs() error {
	for _, d := range []struct{ flag, path string }{{"--certs", f.certs}, {"--collateral", f.collateral}} {
		if d.path == "" {
			continue
		}
		st, err := os.Stat(d.path)
		if err != nil {
			return fmt.Errorf("%s: %w", d.flag, err)
		}
		if !st.IsDir() {
			return fmt.Errorf("%s: %s is not a directory", d.flag, d.path)
		}
	}
	return nil
}

// request reads the evidence in whichever form it comes.
func (f *verifyFlags) request(tee protocol.Tee, reg verifier.Registry) (attestation.Request, error) {
	raw, err := os.ReadFile(f.evidence)
	if err != nil {
		return attestation.Request{}, err
	}
	req := attestation.Request{Tee: tee, Evidence: raw, HashAlgorithm: tee.RuntimeDataHash()}
	if f.reportData != "" {
		if req.RawRuntimeData, err = hex.DecodeString(f.reportData); err != nil {
			return req, fmt.Errorf("--report-data: %w", err)
		}
	}
	if f.initData != "" {
		toml, err := os.ReadFile(f.initData)
		if err != nil {
			return req, err
		}
		req.InitData = &attestation.InitData{TOML: toml}
	}
	if !json.Valid(raw) {
		return req, f.rawEvidence(&req, reg)
	}
	var msg protocol.Attestation
	if json.Unmarshal(raw, &msg) == nil && len(msg.TeeEvidence.Primary) > 0 {
		// A whole KBS attestation: its runtime data is what the evidence binds.
		req.Evidence = msg.TeeEvidence.Primary
		req.RuntimeData = protocol.RuntimeDataClaims(msg.RuntimeData.Nonce, msg.RuntimeData.TeePubKey, &msg.TeeEvidence.Additional)
		req.RawRuntimeData = nil
		if msg.InitData != nil && req.InitData == nil {
			req.InitData = &attestation.InitData{TOML: []byte(msg.InitData.Body)}
		}
	}
	return req, nil
}

// rawEvidence handles the bytes a guest tool wrote: the verifier for this
// run reads them instead of JSON evidence.
func (f *verifyFlags) rawEvidence(req *attestation.Request, reg verifier.Registry) error {
	raw := req.Evidence
	req.Evidence = json.RawMessage("null")
	switch req.Tee {
	case protocol.TeeCCA:
		// The CBOR token as the attester wraps it.
		req.Evidence, _ = json.Marshal(cca.Evidence{Token: raw})
	case protocol.TeeSNP:
		v, ok := reg[protocol.TeeSNP].(*snp.Verifier)
		if !ok {
			return fmt.Errorf("no snp verifier")
		}
		reg[req.Tee] = rawVerifier(func(ctx context.Context, want verifier.Expected) (verifier.Claims, error) {
			return v.VerifyReport(ctx, raw, snp.CertChain{}, want)
		})
	case protocol.TeeTDX:
		v, ok := reg[protocol.TeeTDX].(*tdx.Verifier)
		if !ok {
			return fmt.Errorf("no tdx verifier")
		}
		var log []byte
		if f.eventLog != "" {
			var err error
			if log, err = os.ReadFile(f.eventLog); err != nil {
				return err
			}
		}
		reg[req.Tee] = rawVerifier(func(ctx context.Context, want verifier.Expected) (verifier.Claims, error) {
			return v.VerifyQuote(ctx, raw, log, want)
		})
	case protocol.TeeSGX:
		v, ok := reg[protocol.TeeSGX].(*sgx.Verifier)
		if !ok {
			return fmt.Errorf("no sgx verifier")
		}
		reg[req.Tee] = rawVerifier(func(ctx context.Context, want verifier.Expected) (verifier.Claims, error) {
			return v.VerifyQuote(ctx, raw, want)
		})
	default:
		return fmt.Errorf("%s evidence must be JSON", req.Tee)
	}
	return nil
}

type rawVerifier func(context.Context, verifier.Expected) (verifier.Claims, error)

func (r rawVerifier) Evaluate(ctx context.Context, _ json.RawMessage, want verifier.Expected) ([]verifier.TeeClaims, error) {
	return verifier.CPU(r(ctx, want))
}

// service is an in-memory attestation service with the requested policy
// and reference values and a throw-away signing key.
func (f *verifyFlags) service(ctx context.Context, reg verifier.Registry, now func() time.Time) (*attestation.Service, error) {
	st := memory.New()
	rv := rvps.New(st)
	if f.refValues != "" {
		b, err := os.ReadFile(f.refValues)
		if err != nil {
			return nil, err
		}
		msg, _ := json.Marshal(rvps.Message{Version: rvps.MessageVersion, Type: "sample",
			Payload: base64.StdEncoding.EncodeToString(b)})
		if _, err := rv.Register(ctx, msg); err != nil {
			return nil, fmt.Errorf("--reference-values: %w", err)
		}
	}
	policies, err := attestation.NewPolicies(ctx, st, rv)
	if err != nil {
		return nil, err
	}
	if f.policy != "" {
		text, err := os.ReadFile(f.policy)
		if err != nil {
			return nil, err
		}
		if err := policies.Set(ctx, attestation.DefaultPolicyID+"_cpu", string(text)); err != nil {
			return nil, fmt.Errorf("--policy: %w", err)
		}
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	signer, err := ear.NewSigner(key, nil)
	if err != nil {
		return nil, err
	}
	return attestation.New(reg, policies, signer, attestation.Config{Issuer: "attestation-service verify"}), nil
}

func printResult(out io.Writer, c *ear.Claims, asJSON bool) error {
	if asJSON {
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		return enc.Encode(c.Submods)
	}
	names := make([]string, 0, len(c.Submods))
	for n := range c.Submods {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		a := c.Submods[n]
		fmt.Fprintf(out, "%s: evidence verified; appraisal %s (policy %s)\n", n, a.Status, a.PolicyID)
		tv, _ := json.Marshal(a.TrustVector)
		fmt.Fprintf(out, "  trust vector: %s\n", tv)
		keys := make([]string, 0, len(a.AnnotatedEvidence))
		for k := range a.AnnotatedEvidence {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			fmt.Fprintf(out, "  %s: %s\n", k, strings.TrimSpace(string(a.AnnotatedEvidence[k])))
		}
	}
	return nil
}
