package kbs

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	gojose "github.com/go-jose/go-jose/v4"

	"github.com/cocoon-cc/cocoon/attestation"
	"github.com/cocoon-cc/cocoon/attestation/ear"
	"github.com/cocoon-cc/cocoon/attestation/verifier"
	"github.com/cocoon-cc/cocoon/kbs/respolicy"
	"github.com/cocoon-cc/cocoon/policy"
	"github.com/cocoon-cc/cocoon/rvps"
	"github.com/cocoon-cc/cocoon/store"
	"github.com/cocoon-cc/cocoon/store/bolt"
	"github.com/cocoon-cc/cocoon/store/memory"
	"github.com/cocoon-cc/cocoon/store/postgres"
	"github.com/cocoon-cc/cocoon/store/redis"
	"github.com/cocoon-cc/cocoon/store/sealed"
	"github.com/cocoon-cc/cocoon/store/wal"
)

// KeyNamespace holds the service's own keys.
const KeyNamespace = "keys"

const (
	signerKeyName  = "ear-signer"
	sessionKeyName = "session-nonce"
)

// New builds a KBS from its configuration and the verifiers to use.
func New(ctx context.Context, cfg *Config, verifiers verifier.Registry, log *slog.Logger) (*Server, error) {
	st, err := OpenStore(ctx, cfg, log)
	if err != nil {
		return nil, err
	}
	s, err := newServer(ctx, cfg, st, verifiers, log)
	if err != nil {
		st.Close()
		return nil, err
	}
	return s, nil
}

func newServer(ctx context.Context, cfg *Config, st store.Store, verifiers verifier.Registry, log *slog.Logger) (*Server, error) {
	srv := &Server{cfg: cfg, store: st, log: log, metrics: newMetrics(), now: time.Now,
		sessions: &sessions{store: st, timeout: time.Duration(cfg.AttestationService.Timeout) * time.Minute, now: time.Now,
			max: int64(cfg.Limits.MaxSessions), held: cfg.SessionStorageType == SessionsInCookie},
		limiter: newClientLimiter(cfg.Limits, time.Now)}
	if cfg.SessionStorageType == "Memory" && cfg.StorageBackend.StorageType != "Memory" {
		srv.sessions.store = memory.New()
	}
	err := srv.sessions.count(ctx)
	if err != nil {
		return nil, err
	}
	srv.sessions.key, err = loadOrCreate(ctx, st, sessionKeyName, func() []byte {
		k := make([]byte, 32)
		rand.Read(k)
		return k
	})
	if err != nil {
		return nil, fmt.Errorf("kbs: session key: %w", err)
	}
	var keys []gojose.JSONWebKey
	var remote *remoteAS
	if cfg.AttestationService.Type == ASRestful {
		if remote, keys, err = newRemoteAS(ctx, cfg.AttestationService); err != nil {
			return nil, err
		}
		srv.as = remote
	} else {
		as, rv, err := NewBuiltinAS(ctx, cfg, st, verifiers)
		if err != nil {
			return nil, err
		}
		srv.as, srv.builtin, srv.rvps = as, as, rv
		keys = []gojose.JSONWebKey{as.Signer().Public()}
	}
	if cfg.AttestationToken.InsecureHeaderJWK {
		log.Warn("accepting attestation tokens signed by any key in their header (insecure_header_jwk = true): for development only")
	}
	if srv.tokens, err = newTokenVerifier(cfg.AttestationToken, keys); err != nil {
		return nil, err
	}
	srv.jwks = keys
	if remote != nil {
		remote.tokens = srv.tokens
	}
	if srv.admin, err = NewAdmin(ctx, cfg.Admin, st, cfg.DataDir, log); err != nil {
		return nil, err
	}
	rp := policy.New(st, ResourcePolicyNamespace)
	rp.CacheDecisions(nil)
	rp.SetBudget(cfg.Limits.PolicyBudget())
	rp.SetSample(sampleTokenClaims, map[string]any{"plugin": "resource",
		"resource-path": []any{"default", "key", "sample"}, "query": map[string]any{}})
	if err := rp.SetDefault(ctx, ResourcePolicyID, respolicy.Default); err != nil {
		return nil, fmt.Errorf("kbs: default resource policy: %w", err)
	}
	srv.resources = &resources{store: st, policy: rp}
	srv.replicas = newReplicas(st, srv.now)
	if srv.spiffe, err = newSPIFFE(ctx, cfg.SPIFFE, st, srv.metrics); err != nil {
		return nil, err
	}
	return srv, checkPlugins(cfg.Plugins)
}

// NewBuiltinAS wires an attestation service over st from the
// [attestation_service] configuration: the KBS's built-in one, or the
// standalone attestation-service's.
func NewBuiltinAS(ctx context.Context, cfg *Config, st store.Store, verifiers verifier.Registry) (*attestation.Service, *rvps.Service, error) {
	rv := rvps.New(st)
	policies, err := attestation.NewPolicies(ctx, st, rv)
	if err != nil {
		return nil, nil, err
	}
	policies.SetBudget(cfg.Limits.PolicyBudget())
	signer, err := loadSigner(ctx, cfg.AttestationService.TokenBroker.Signer, st)
	if err != nil {
		return nil, nil, err
	}
	return attestation.New(verifiers, policies, signer, attestation.Config{
		TokenDuration: time.Duration(cfg.AttestationService.TokenBroker.DurationMin) * time.Minute,
		Issuer:        cfg.AttestationService.TokenBroker.IssuerName,
	}), rv, nil
}

// sampleTokenClaims is the input an uploaded resource policy is tried on:
// the claims of an affirming token.
var sampleTokenClaims = map[string]any{
	"eat_profile": ear.Profile,
	"submods": map[string]any{"cpu0": map[string]any{
		"ear.status": "affirming",
		"ear.veraison.annotated-evidence": map[string]any{
			"sample":              map[string]any{"svn": "1", "launch_digest": "abcde"},
			"runtime_data_claims": map[string]any{"nonce": "sample"},
		},
	}},
}

func checkPlugins(plugins []PluginConfig) error {
	for _, p := range plugins {
		if p.Name != "resource" {
			return fmt.Errorf("kbs: plugin %q is not available (resource)", p.Name)
		}
	}
	return nil
}

// SharedNamespaces are the namespaces whose contents replicas cache (the
// compiled policies, the reference values, the resources): a shared store
// keeps version counters of them, current before every decision.
var SharedNamespaces = []string{ResourcePolicyNamespace, attestation.PolicyNamespace, rvps.Namespace, SPIFFEPolicyNamespace, ResourceNamespace}

// sealingCheck is the marker that tells a wrong sealing key at start.
const sealingCheck = "sealing-check"

// OpenStore opens the configured storage backend and seals every value.
// The embedded store keeps RCAR sessions, many small and short-lived
// records, in a log of their own (store/wal) and the rest in bbolt, with
// the sealing key beside them unless sealing_key_path moves it.
// PostgreSQL holds everything, shared by replicas, with the sealing key
// every replica reads from sealing_key_path; log tells when a replica's
// lease (postgres.Options) is lost and held again. Sessions may go to
// Redis instead (session_storage_type).
func OpenStore(ctx context.Context, cfg *Config, log *slog.Logger) (store.Store, error) {
	sb := cfg.StorageBackend
	var def store.Store
	var key []byte
	var err error
	routes := map[string]store.Store{}
	switch sb.StorageType {
	case "Memory":
		if cfg.SessionStorageType == "Redis" {
			return nil, errors.New("kbs: Redis sessions need a durable storage_type, whose sealing key seals them")
		}
		return memory.New(), nil
	case "Postgres":
		if key, err = sealed.LoadKey(sb.Backends.Postgres.SealingKeyPath); err != nil {
			return nil, fmt.Errorf("kbs: the sealing key of a shared store must exist (every replica reads the same one): %w", err)
		}
		def, err = postgres.Open(ctx, sb.Backends.Postgres.URL(), postgres.Options{Versioned: SharedNamespaces, Log: log})
	default:
		def, err = openEmbedded(sb.Backends.Embedded, routes, cfg.SessionStorageType == "Embedded")
		if err == nil {
			key, err = sealed.LoadOrCreateKey(embeddedKeyPath(sb.Backends.Embedded))
		}
	}
	if err != nil {
		closeAll(def, routes)
		return nil, err
	}
	if cfg.SessionStorageType == "Redis" {
		if routes[SessionNamespace], err = redis.Open(ctx, sb.Backends.Redis.URL); err != nil {
			closeAll(def, routes)
			return nil, err
		}
	}
	st, err := sealed.New(store.NewRouted(def, routes), key)
	if err == nil {
		err = st.Verify(ctx, KeyNamespace, sealingCheck)
	}
	if err != nil {
		closeAll(def, routes)
		return nil, err
	}
	return st, nil
}

func embeddedKeyPath(emb EmbeddedConfig) string {
	if emb.SealingKeyPath != "" {
		return emb.SealingKeyPath
	}
	return filepath.Join(emb.Path, "sealing.key")
}

// openEmbedded opens bbolt in the data directory and, when the embedded
// store keeps the sessions, their log beside it.
func openEmbedded(emb EmbeddedConfig, routes map[string]store.Store, sessions bool) (store.Store, error) {
	b, err := bolt.Open(emb.Path)
	if err != nil || !sessions {
		return b, err
	}
	if routes[SessionNamespace], err = wal.Open(filepath.Join(emb.Path, "sessions")); err != nil {
		b.Close()
		return nil, err
	}
	return b, nil
}

func closeAll(def store.Store, routes map[string]store.Store) {
	if def != nil {
		def.Close()
	}
	for _, s := range routes {
		s.Close()
	}
}

// loadSigner returns the token signer: the configured PEM key, or the key
// kept in the store, generated on first start. Keeping it is what lets
// tokens outlive a restart.
func loadSigner(ctx context.Context, c *SignerConfig, st store.Store) (*ear.Signer, error) {
	if c != nil && c.KeyPath != "" {
		return signerFromFiles(c)
	}
	der, err := loadOrCreate(ctx, st, signerKeyName, func() []byte {
		k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		der, _ := x509.MarshalPKCS8PrivateKey(k)
		return der
	})
	if err != nil {
		return nil, fmt.Errorf("kbs: token key: %w", err)
	}
	k, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, fmt.Errorf("kbs: stored token key: %w", err)
	}
	ek, ok := k.(*ecdsa.PrivateKey)
	if !ok {
		return nil, errors.New("kbs: stored token key is not ECDSA")
	}
	return ear.NewSigner(ek, nil)
}

// loadOrCreate returns the key named name in the store's KeyNamespace,
// generated and stored on first use; when replicas race, the first
// stored wins.
func loadOrCreate(ctx context.Context, st store.Store, name string, generate func() []byte) ([]byte, error) {
	k, err := st.Get(ctx, KeyNamespace, name)
	if !errors.Is(err, store.ErrNotFound) {
		return k, err
	}
	k = generate()
	err = st.Update(ctx, KeyNamespace, name, func(old []byte) ([]byte, error) {
		if old != nil {
			k = old
		}
		return k, nil
	})
	return k, err
}

func signerFromFiles(c *SignerConfig) (*ear.Signer, error) {
	b, err := os.ReadFile(c.KeyPath)
	if err != nil {
		return nil, fmt.Errorf("kbs: token signer key: %w", err)
	}
	block, _ := pem.Decode(b)
	if block == nil {
		return nil, fmt.Errorf("kbs: token signer key %s: no PEM block", c.KeyPath)
	}
	var k any
	if k, err = x509.ParsePKCS8PrivateKey(block.Bytes); err != nil {
		if k, err = x509.ParseECPrivateKey(block.Bytes); err != nil {
			return nil, fmt.Errorf("kbs: token signer key %s: %w", c.KeyPath, err)
		}
	}
	ek, ok := k.(*ecdsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("kbs: token signer key %s is not ECDSA P-256", c.KeyPath)
	}
	var chain []*x509.Certificate
	if c.CertPath != "" {
		if chain, err = readCerts(c.CertPath); err != nil {
			return nil, err
		}
	}
	return ear.NewSigner(ek, chain)
}

func readCerts(path string) ([]*x509.Certificate, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("kbs: %w", err)
	}
	var certs []*x509.Certificate
	for block, rest := pem.Decode(b); block != nil; block, rest = pem.Decode(rest) {
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("kbs: %s: %w", path, err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, fmt.Errorf("kbs: %s: no certificate", path)
	}
	return certs, nil
}

// newTokenVerifier trusts the attestation service's keys plus
// [attestation_token].
func newTokenVerifier(c TokenConfig, keys []gojose.JSONWebKey) (*ear.Verifier, error) {
	opts := ear.VerifierOptions{Keys: keys,
		InsecureHeaderJWK: c.InsecureHeaderJWK, Leeway: 30 * time.Second}
	for _, p := range c.TrustedJWKSets {
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("kbs: trusted_jwk_sets: %w", err)
		}
		var set gojose.JSONWebKeySet
		if err := json.Unmarshal(b, &set); err != nil {
			return nil, fmt.Errorf("kbs: trusted_jwk_sets %s: %w", p, err)
		}
		opts.Keys = append(opts.Keys, set.Keys...)
	}
	if len(c.TrustedCertsPaths) > 0 {
		opts.Roots = x509.NewCertPool()
		for _, p := range c.TrustedCertsPaths {
			certs, err := readCerts(p)
			if err != nil {
				return nil, err
			}
			for _, cert := range certs {
				opts.Roots.AddCert(cert)
			}
		}
	}
	return ear.NewVerifier(opts), nil
}
