package kbs

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/cocoon-cc/cocoon/attestation/ear"
	"github.com/cocoon-cc/cocoon/jose"
	"github.com/cocoon-cc/cocoon/kbs/respolicy"
	"github.com/cocoon-cc/cocoon/kbs/svid"
	"github.com/cocoon-cc/cocoon/policy"
	"github.com/cocoon-cc/cocoon/protocol"
	"github.com/cocoon-cc/cocoon/store"
)

// SPIFFE policy store: the policy deciding which SPIFFE IDs an appraisal
// may receive.
const (
	SPIFFEPolicyNamespace = "spiffe-policy"
	SPIFFEPolicyID        = "spiffe-policy"
)

const (
	spiffeCAKeyName  = "spiffe-ca"
	spiffeCACertName = "spiffe-ca-cert"
)

// SPIFFEConfig is [spiffe], a Cocoon extension: the KBS as the SPIFFE CA
// of a trust domain, issuing SVIDs to attested guests.
type SPIFFEConfig struct {
	// TrustDomain enables the SPIFFE endpoints; none: no SVIDs.
	TrustDomain    string `toml:"trust_domain"`
	X509SVIDTTLMin int    `toml:"x509_svid_ttl_min"`
	JWTSVIDTTLMin  int    `toml:"jwt_svid_ttl_min"`
	// CAKeyPath and CACertPath give the CA key (PEM) and its chain (PEM,
	// the CA's certificate first, the trust domain's root last); without
	// them the KBS generates a P-256 key and a self-signed root once and
	// keeps them in its (sealed) store, shared by replicas.
	CAKeyPath  string `toml:"ca_key_path"`
	CACertPath string `toml:"ca_cert_path"`
}

// Defaults of [spiffe].
const (
	DefaultX509SVIDMinutes = 60
	DefaultJWTSVIDMinutes  = 5
)

func (c *SPIFFEConfig) normalize() error {
	if c.X509SVIDTTLMin < 0 || c.JWTSVIDTTLMin < 0 {
		return errors.New("config: [spiffe] lifetimes must be positive (0: the default)")
	}
	if c.X509SVIDTTLMin == 0 {
		c.X509SVIDTTLMin = DefaultX509SVIDMinutes
	}
	if c.JWTSVIDTTLMin == 0 {
		c.JWTSVIDTTLMin = DefaultJWTSVIDMinutes
	}
	if (c.CAKeyPath == "") != (c.CACertPath == "") {
		return errors.New("config: [spiffe] needs both ca_key_path and ca_cert_path, or neither")
	}
	if c.TrustDomain != "" {
		if _, err := spiffeid.TrustDomainFromString(c.TrustDomain); err != nil {
			return fmt.Errorf("config: [spiffe] trust_domain: %w", err)
		}
	}
	return nil
}

// spiffeIssuer is the SPIFFE plugin: the CA, the policy and the count of
// what it issued.
type spiffeIssuer struct {
	ca     *svid.CA
	policy *policy.Engine
	issued *prometheus.CounterVec
}

// newSPIFFE wires the SPIFFE plugin when [spiffe] names a trust domain.
func newSPIFFE(ctx context.Context, cfg SPIFFEConfig, st store.Store, m *metrics) (*spiffeIssuer, error) {
	if cfg.TrustDomain == "" {
		return nil, nil
	}
	td := spiffeid.RequireTrustDomainFromString(cfg.TrustDomain)
	key, chain, err := loadSPIFFECA(ctx, cfg, td, st)
	if err != nil {
		return nil, err
	}
	ca, err := svid.NewCA(td, key, chain, svid.Options{
		X509TTL:     time.Duration(cfg.X509SVIDTTLMin) * time.Minute,
		JWTTTL:      time.Duration(cfg.JWTSVIDTTLMin) * time.Minute,
		RefreshHint: 5 * time.Minute,
	})
	if err != nil {
		return nil, fmt.Errorf("kbs: %w", err)
	}
	pe := policy.New(st, SPIFFEPolicyNamespace)
	pe.CacheDecisions(nil)
	pe.SetSample(sampleTokenClaims, spiffeData(td.ID(), protocol.SVIDTypeX509, nil))
	// Deny by default: the owner says which appraisals get which IDs.
	if err := pe.SetDefault(ctx, SPIFFEPolicyID, respolicy.DenyAll); err != nil {
		return nil, fmt.Errorf("kbs: default SPIFFE policy: %w", err)
	}
	issued := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kbs_svids_issued_total",
		Help: "SVIDs issued, by type (x509-svid, jwt-svid)."}, []string{"type"})
	m.registry.MustRegister(issued)
	return &spiffeIssuer{ca: ca, policy: pe, issued: issued}, nil
}

// loadSPIFFECA reads the configured CA, or the one kept in the store,
// generated on first start; when replicas race, the first stored wins.
func loadSPIFFECA(ctx context.Context, cfg SPIFFEConfig, td spiffeid.TrustDomain, st store.Store) (crypto.Signer, []*x509.Certificate, error) {
	if cfg.CAKeyPath != "" {
		key, err := readSignerPEM(cfg.CAKeyPath)
		if err != nil {
			return nil, nil, err
		}
		chain, err := readCerts(cfg.CACertPath)
		return key, chain, err
	}
	der, err := loadOrCreate(ctx, st, spiffeCAKeyName, func() []byte {
		k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		der, _ := x509.MarshalPKCS8PrivateKey(k)
		return der
	})
	if err != nil {
		return nil, nil, fmt.Errorf("kbs: SPIFFE CA key: %w", err)
	}
	k, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, nil, fmt.Errorf("kbs: stored SPIFFE CA key: %w", err)
	}
	key, ok := k.(crypto.Signer)
	if !ok {
		return nil, nil, errors.New("kbs: stored SPIFFE CA key cannot sign")
	}
	var genErr error
	certDER, err := loadOrCreate(ctx, st, spiffeCACertName, func() []byte {
		c, err := svid.GenerateRoot(td, key, time.Now())
		if err != nil {
			genErr = err
			return nil
		}
		return c.Raw
	})
	if err == nil {
		err = genErr
	}
	if err != nil {
		return nil, nil, fmt.Errorf("kbs: SPIFFE CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(certDER)
	if err != nil {
		return nil, nil, fmt.Errorf("kbs: stored SPIFFE CA certificate: %w", err)
	}
	if len(cert.URIs) != 1 || cert.URIs[0].Host != td.Name() {
		return nil, nil, fmt.Errorf("kbs: the stored SPIFFE CA is trust domain %v's, not %s: delete keys/%s and keys/%s to make a new one",
			cert.URIs, td, spiffeCAKeyName, spiffeCACertName)
	}
	return key, []*x509.Certificate{cert}, nil
}

func readSignerPEM(path string) (crypto.Signer, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("kbs: SPIFFE CA key: %w", err)
	}
	block, _ := pem.Decode(b)
	if block == nil {
		return nil, fmt.Errorf("kbs: SPIFFE CA key %s: no PEM block", path)
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		if k, err = x509.ParseECPrivateKey(block.Bytes); err != nil {
			if k, err = x509.ParsePKCS1PrivateKey(block.Bytes); err != nil {
				return nil, fmt.Errorf("kbs: SPIFFE CA key %s: %w", path, err)
			}
		}
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("kbs: SPIFFE CA key %s cannot sign", path)
	}
	return s, nil
}

// spiffeData is the SPIFFE policy's data: what is asked for.
func spiffeData(id spiffeid.ID, typ string, audience []string) map[string]any {
	aud := make([]any, len(audience))
	for i, a := range audience {
		aud[i] = a
	}
	return map[string]any{"plugin": "spiffe", "spiffe-id": id.String(), "trust-domain": id.TrustDomain().Name(),
		"path": id.Path(), "svid-type": typ, "audience": aud}
}

func errNoSPIFFE() error {
	return protocol.Errorf(protocol.KindPluginNotFound, "plugin \"spiffe\" not found: [spiffe] names no trust domain")
}

// spiffeCall serves /kbs/v0/spiffe/<rest>: the bundle to anyone, SVIDs
// to attested guests.
func (s *Server) spiffeCall(w http.ResponseWriter, r *http.Request, rest string) error {
	if s.spiffe == nil {
		return errNoSPIFFE()
	}
	switch {
	case rest == protocol.SPIFFEBundle && r.Method == http.MethodGet:
		w.Header().Set("Content-Type", "application/json")
		w.Write(s.spiffe.ca.Bundle())
		return nil
	case (rest == protocol.SVIDTypeX509 || rest == protocol.SVIDTypeJWT) && r.Method == http.MethodPost:
		return s.issueSVID(w, r, rest)
	}
	return protocol.Errorf(protocol.KindPluginNotFound, "spiffe: no %s %s (GET bundle, POST x509-svid, POST jwt-svid)", r.Method, rest)
}

// issueSVID checks the token, that the request is signed by the token's
// TEE key and carries the token's session nonce, asks the SPIFFE policy
// about the ID the token's initdata names, and answers with the SVID
// sealed to the TEE key.
func (s *Server) issueSVID(w http.ResponseWriter, r *http.Request, typ string) error {
	claims, raw, err := s.verifiedToken(r)
	if err != nil {
		return err
	}
	pub, err := teePubKeyOf(claims)
	if err != nil {
		return err
	}
	body, err := readBody(r, protocol.KindPluginInternal)
	if err != nil {
		return err
	}
	payload, err := jose.VerifySigned(pub, string(body))
	if err != nil {
		return &protocol.Error{Kind: protocol.KindPluginInternal, Detail: "spiffe: " + err.Error(), Err: err}
	}
	req, csr, err := svid.ParseRequest(typ, payload)
	if err != nil {
		return &protocol.Error{Kind: protocol.KindPluginInternal, Detail: "spiffe: " + err.Error(), Err: err}
	}
	if nonce := sessionNonce(claims); nonce == "" || req.Nonce != nonce {
		return protocol.Errorf(protocol.KindPluginInternal, "spiffe: the request carries another session's nonce than the token's")
	}
	td := s.spiffe.ca.TrustDomain()
	id, err := svid.IDFromClaims(td, claims)
	if err != nil {
		return &protocol.Error{Kind: protocol.KindPluginInternal, Detail: "spiffe: " + err.Error(), Err: err}
	}
	if err := s.spiffeAllowed(r.Context(), claims, raw, spiffeData(id, typ, req.Audience)); err != nil {
		return err
	}
	var out any
	var exp time.Time
	if typ == protocol.SVIDTypeX509 {
		var chain [][]byte
		chain, exp, err = s.spiffe.ca.IssueX509(id, csr.PublicKey)
		out = protocol.X509SVIDResponse{SPIFFEID: id.String(), CertChain: chain, Bundle: s.spiffe.ca.Bundle(), ExpiresAt: exp.Unix()}
	} else {
		var tok string
		tok, exp, err = s.spiffe.ca.IssueJWT(id, req.Audience)
		out = protocol.JWTSVIDResponse{SPIFFEID: id.String(), Token: tok, ExpiresAt: exp.Unix()}
	}
	if err != nil {
		return err
	}
	plain, err := json.Marshal(out)
	if err != nil {
		return err
	}
	resp, err := jose.Encrypt(pub, plain, s.cfg.JWE.AllowRSA1_5)
	if err != nil {
		return &protocol.Error{Kind: protocol.KindJwe, Detail: err.Error(), Err: err}
	}
	s.spiffe.issued.WithLabelValues(typ).Inc()
	s.log.Info("audit", "action", "issue-svid", "type", typ, "spiffe_id", id.String(), "expires", exp.UTC().Format(time.RFC3339),
		"remote", r.RemoteAddr, "tee", teeOf(claims), "status", claims.Submods["cpu0"].Status)
	writeJSON(w, http.StatusOK, resp)
	return nil
}

// spiffeAllowed asks the SPIFFE policy: input = the token's claims, data
// = the ID and SVID asked for; only true allows.
func (s *Server) spiffeAllowed(ctx context.Context, token *ear.Claims, claims, data map[string]any) error {
	out, err := s.spiffe.policy.Eval(ctx, SPIFFEPolicyID, "data.policy.allow", claims, data)
	if err != nil {
		s.metrics.decisions.WithLabelValues("error").Inc()
		return &protocol.Error{Kind: protocol.KindPolicyEngine, Detail: err.Error(), Err: err}
	}
	if allow, ok := out.(bool); !ok || !allow {
		s.metrics.decisions.WithLabelValues("deny").Inc()
		return protocol.Errorf(protocol.KindPolicyDeny, "SPIFFE policy denied %s %s%s", data["svid-type"], data["spiffe-id"], appraisal(token))
	}
	s.metrics.decisions.WithLabelValues("allow").Inc()
	return nil
}

// sessionNonce is the RCAR nonce the token's runtime data answered.
func sessionNonce(c *ear.Claims) string {
	var rd struct {
		Nonce string `json:"nonce"`
	}
	c.Submods["cpu0"].RuntimeData(&rd)
	return rd.Nonce
}

// setSPIFFEPolicy and getSPIFFEPolicy serve the admin endpoint
// /kbs/v0/spiffe-policy, with the resource policy's body.
func (s *Server) setSPIFFEPolicy(w http.ResponseWriter, r *http.Request, id *AdminIdentity) error {
	if s.spiffe == nil {
		return errNoSPIFFE()
	}
	return s.setPolicy(r, id, s.spiffe.policy, SPIFFEPolicyID, "set-spiffe-policy")
}

func (s *Server) getSPIFFEPolicy(w http.ResponseWriter, r *http.Request, _ *AdminIdentity) error {
	if s.spiffe == nil {
		return errNoSPIFFE()
	}
	text, err := s.spiffe.policy.Get(r.Context(), SPIFFEPolicyID)
	if err != nil {
		return fmt.Errorf("SPIFFE policy: %w", err)
	}
	writeJSON(w, http.StatusOK, map[string]string{"policy": base64.RawURLEncoding.EncodeToString([]byte(text))})
	return nil
}
