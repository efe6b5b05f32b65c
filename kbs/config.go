package kbs

import (
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strconv"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/cocoon-cc/cocoon/attestation/verifiers"
	"github.com/cocoon-cc/cocoon/policy"
)

// Config is the KBS configuration. The TOML keys are Trustee's, so a
// Trustee kbs-config.toml works; keys Cocoon does not use are logged.
type Config struct {
	HTTPServer         HTTPServerConfig `toml:"http_server"`
	AttestationToken   TokenConfig      `toml:"attestation_token"`
	AttestationService ASConfig         `toml:"attestation_service"`
	Admin              AdminConfig      `toml:"admin"`
	StorageBackend     StorageConfig    `toml:"storage_backend"`
	// SessionStorageType is where attested RCAR sessions are kept:
	// "Cookie" (the default) by their clients, whose session cookie
	// carries the token, so the KBS writes nothing; or stored, as in
	// Trustee: in the storage_type's store, "Redis", or "Memory" (lost at
	// a restart). Stored sessions are counted (max_sessions) and can be
	// deleted.
	SessionStorageType string         `toml:"session_storage_type"`
	Plugins            []PluginConfig `toml:"plugins"`
	JWE                JWEConfig      `toml:"jwe"`
	DataDir            string         `toml:"data_dir"`
	Logging            LoggingConfig  `toml:"logging"`
	Limits             LimitsConfig   `toml:"limits"`
	SPIFFE             SPIFFEConfig   `toml:"spiffe"`
}

// HTTPServerConfig is [http_server].
type HTTPServerConfig struct {
	Sockets      []string `toml:"sockets"`
	InsecureHTTP bool     `toml:"insecure_http"`
	PrivateKey   string   `toml:"private_key"`
	Certificate  string   `toml:"certificate"`
	// PayloadRequestSize is the request body limit in MiB.
	PayloadRequestSize int `toml:"payload_request_size"`
}

// TokenConfig is [attestation_token]: whose tokens the KBS accepts besides
// its own attestation service's.
type TokenConfig struct {
	TrustedCertsPaths []string `toml:"trusted_certs_paths"`
	TrustedJWKSets    []string `toml:"trusted_jwk_sets"`
	InsecureHeaderJWK bool     `toml:"insecure_header_jwk"`
}

// ASConfig is [attestation_service].
type ASConfig struct {
	Type string `toml:"type"`
	// Timeout is the RCAR session lifetime in minutes.
	Timeout int `toml:"timeout"`
	// ASAddr is the remote attestation service of type coco_as_restful.
	ASAddr string `toml:"as_addr"`
	// ASCertFile is the PEM root the remote service's TLS certificate
	// chains to, when it is not in the system pool.
	ASCertFile  string            `toml:"as_cert_file"`
	TokenBroker TokenBrokerConfig `toml:"attestation_token_broker"`
	RVPS        struct {
		Type string `toml:"type"`
	} `toml:"rvps_config"`
	// Verifiers is [attestation_service.verifiers], a Cocoon extension:
	// where the TEE verifiers find endorsements and collateral.
	Verifiers verifiers.Options `toml:"verifiers"`
}

// TokenBrokerConfig is [attestation_service.attestation_token_broker].
type TokenBrokerConfig struct {
	DurationMin int           `toml:"duration_min"`
	IssuerName  string        `toml:"issuer_name"`
	Signer      *SignerConfig `toml:"signer"`
}

// SignerConfig names a PEM P-256 token signing key (and its certificate
// chain). Without it the key is generated once and kept in the store.
type SignerConfig struct {
	KeyPath  string `toml:"key_path"`
	CertPath string `toml:"cert_path"`
}

// AdminConfig is [admin].
type AdminConfig struct {
	AuthorizationMode string `toml:"authorization_mode"`
	Authentication    struct {
		BearerJWT struct {
			IdentityProviders []IdentityProvider `toml:"identity_providers"`
		} `toml:"bearer_jwt"`
	} `toml:"authentication"`
	Authorization struct {
		RegexACL struct {
			ACLs []ACL `toml:"acls"`
		} `toml:"regex_acl"`
	} `toml:"authorization"`
}

// IdentityProvider is a trusted issuer of admin tokens.
type IdentityProvider struct {
	Issuer       string `toml:"issuer"`
	Audience     string `toml:"audience"`
	PublicKeyURI string `toml:"public_key_uri"`
	JWKSetURI    string `toml:"jwk_set_uri"`
}

// ACL lets a role reach the endpoints whose canonical path its regex
// matches, with the methods named (any when none are).
type ACL struct {
	Role             string `toml:"role"`
	AllowedEndpoints string `toml:"allowed_endpoints"`
	// AllowedMethods is a Cocoon extension.
	AllowedMethods []string `toml:"allowed_methods"`
	// Repositories, a Cocoon extension, makes the role a tenant's: it
	// reaches only the resources and resource policies of these
	// repositories, and nothing that is not a repository's.
	Repositories []string `toml:"repositories"`
}

// StorageConfig is [storage_backend].
type StorageConfig struct {
	StorageType string `toml:"storage_type"`
	Backends    struct {
		Embedded EmbeddedConfig `toml:"embedded"`
		LocalFS  struct {
			DirPath string `toml:"dir_path"`
		} `toml:"local_fs"`
		Postgres PostgresConfig `toml:"postgres"`
		Redis    struct {
			URL string `toml:"url"`
		} `toml:"redis"`
	} `toml:"backends"`
}

// EmbeddedConfig is [storage_backend.backends.embedded].
type EmbeddedConfig struct {
	Path string `toml:"path"`
	// SealingKeyPath holds the key that encrypts every stored value; by
	// default <path>/sealing.key. Keep it apart from the database (a
	// tmpfs, a mounted secret) to protect backups.
	SealingKeyPath string `toml:"sealing_key_path"`
}

// PostgresConfig is [storage_backend.backends.postgres], Trustee's keys
// plus sealing_key_path, which a shared store requires: every replica
// must seal with the same key, and it cannot live in the database it
// protects.
type PostgresConfig struct {
	Host           string `toml:"host"`
	Port           int    `toml:"port"`
	DB             string `toml:"db"`
	Username       string `toml:"username"`
	Password       string `toml:"password"`
	SealingKeyPath string `toml:"sealing_key_path"`
}

// Environment variables that win over the configured connection, as in
// Trustee: they keep credentials out of the configuration file.
const (
	PostgresURLEnv = "POSTGRES_URL"
	RedisURLEnv    = "REDIS_URL"
)

// URL is the connection string: POSTGRES_URL when set, else one built
// from the keys.
func (p PostgresConfig) URL() string {
	if u := os.Getenv(PostgresURLEnv); u != "" {
		return u
	}
	u := url.URL{Scheme: "postgres", Host: net.JoinHostPort(p.Host, strconv.Itoa(p.Port)), Path: "/" + p.DB}
	if p.Password != "" {
		u.User = url.UserPassword(p.Username, p.Password)
	} else {
		u.User = url.User(p.Username)
	}
	return u.String()
}

// PluginConfig is one [[plugins]] entry.
type PluginConfig struct {
	Name string `toml:"name"`
}

// JWEConfig is [jwe], a Cocoon extension.
type JWEConfig struct {
	// AllowRSA1_5 accepts TEE keys that ask for RSA1_5 key wrapping,
	// which is open to padding-oracle attacks. Only for old guests.
	AllowRSA1_5 bool `toml:"allow_rsa1_5"`
}

// LimitsConfig is [limits], a Cocoon extension: what one client and one
// policy evaluation may cost the KBS.
type LimitsConfig struct {
	// RCARRate and RCARBurst are each client's token bucket (per IP
	// address, per /64 for IPv6): every /auth and /attest takes a token,
	// refilled RCARRate times a second up to RCARBurst.
	RCARRate  float64 `toml:"rcar_rate"`
	RCARBurst int     `toml:"rcar_burst"`
	// MaxSessions bounds the attested sessions this KBS keeps at once.
	MaxSessions int `toml:"max_sessions"`
	// PolicyEvalMs and PolicyEvalMiB are the budget of one resource or
	// attestation policy evaluation (policy.Budget).
	PolicyEvalMs  int `toml:"policy_eval_ms"`
	PolicyEvalMiB int `toml:"policy_eval_mib"`
}

// PolicyBudget is the evaluation budget the limits give.
func (l LimitsConfig) PolicyBudget() policy.Budget {
	return policy.Budget{Time: time.Duration(l.PolicyEvalMs) * time.Millisecond, Memory: uint64(l.PolicyEvalMiB) << 20}
}

// LoggingConfig is [logging], a Cocoon extension.
type LoggingConfig struct {
	Level  string `toml:"level"`
	Format string `toml:"format"`
}

// SessionsInCookie is the session_storage_type of sessions their clients
// hold.
const SessionsInCookie = "Cookie"

// Attestation service types.
const (
	ASBuiltin = "coco_as_builtin"
	ASRestful = "coco_as_restful"
)

// Defaults of the configuration.
const (
	DefaultSocket         = "127.0.0.1:8080"
	DefaultPayloadMiB     = 2
	DefaultSessionMinutes = 5
	DefaultTokenMinutes   = 5
	DefaultDataDir        = "/var/lib/cocoon/kbs"
	// A node's guests share its address: a burst of 500 handshakes at once
	// from one address passes, 100 a second after that.
	DefaultRCARRate    = 100
	DefaultRCARBurst   = 500
	DefaultMaxSessions = 50000
	DefaultRedisURL    = "redis://127.0.0.1:6379"
)

// LoadConfig reads a TOML configuration file.
func LoadConfig(path string, log *slog.Logger) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return ParseConfig(b, log)
}

// ParseConfig decodes TOML configuration and applies the defaults.
func ParseConfig(b []byte, log *slog.Logger) (*Config, error) {
	var c Config
	md, err := toml.Decode(string(b), &c)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	for _, k := range md.Undecoded() {
		log.Warn("configuration key not used by Cocoon", "key", k.String())
	}
	return &c, c.normalize()
}

func (c *Config) normalize() error {
	if len(c.HTTPServer.Sockets) == 0 {
		c.HTTPServer.Sockets = []string{DefaultSocket}
	}
	if c.HTTPServer.PayloadRequestSize <= 0 {
		c.HTTPServer.PayloadRequestSize = DefaultPayloadMiB
	}
	if !c.HTTPServer.InsecureHTTP && (c.HTTPServer.PrivateKey == "" || c.HTTPServer.Certificate == "") {
		return fmt.Errorf("config: [http_server] needs private_key and certificate, or insecure_http = true")
	}
	if c.AttestationService.Timeout <= 0 {
		c.AttestationService.Timeout = DefaultSessionMinutes
	}
	if c.AttestationService.TokenBroker.DurationMin <= 0 {
		c.AttestationService.TokenBroker.DurationMin = DefaultTokenMinutes
	}
	if err := c.Limits.normalize(); err != nil {
		return err
	}
	if err := c.SPIFFE.normalize(); err != nil {
		return err
	}
	switch c.AttestationService.Type {
	case "", "coco_as_builtin", "CoCoASBuiltIn":
		c.AttestationService.Type = ASBuiltin
	case ASRestful:
		if c.AttestationService.ASAddr == "" {
			return fmt.Errorf("config: attestation_service type %s needs as_addr", ASRestful)
		}
	default:
		return fmt.Errorf("config: attestation_service type %q is not supported (%s, %s)", c.AttestationService.Type, ASBuiltin, ASRestful)
	}
	return c.normalizeStorage()
}

func (l *LimitsConfig) normalize() error {
	if l.RCARRate < 0 || l.RCARBurst < 0 || l.MaxSessions < 0 || l.PolicyEvalMs < 0 || l.PolicyEvalMiB < 0 {
		return fmt.Errorf("config: [limits] values must be positive (0: the default)")
	}
	if l.RCARRate == 0 {
		l.RCARRate = DefaultRCARRate
	}
	if l.RCARBurst == 0 {
		l.RCARBurst = DefaultRCARBurst
	}
	if l.MaxSessions == 0 {
		l.MaxSessions = DefaultMaxSessions
	}
	if l.PolicyEvalMs == 0 {
		l.PolicyEvalMs = int(policy.DefaultEvalTime / time.Millisecond)
	}
	if l.PolicyEvalMiB == 0 {
		l.PolicyEvalMiB = policy.DefaultEvalMemory >> 20
	}
	return nil
}

func (c *Config) normalizeStorage() error {
	s := &c.StorageBackend
	switch s.StorageType {
	case "", "Embedded":
		s.StorageType = "Embedded"
	case "LocalFs", "LocalJson":
		// Trustee's file backends become the embedded store in their directory.
		s.StorageType = "Embedded"
		if s.Backends.Embedded.Path == "" {
			s.Backends.Embedded.Path = s.Backends.LocalFS.DirPath
		}
	case "Memory":
	case "Postgres":
		if err := s.Backends.Postgres.normalize(); err != nil {
			return err
		}
	default:
		return fmt.Errorf("config: storage_type %q is not supported (Embedded, Postgres, Memory; Redis only as session_storage_type)", s.StorageType)
	}
	if c.DataDir == "" {
		c.DataDir = s.Backends.Embedded.Path
	}
	if c.DataDir == "" {
		c.DataDir = DefaultDataDir
	}
	if s.StorageType == "Embedded" && s.Backends.Embedded.Path == "" {
		s.Backends.Embedded.Path = c.DataDir
	}
	switch c.SessionStorageType {
	case "":
		c.SessionStorageType = SessionsInCookie
	case SessionsInCookie, "Memory", s.StorageType:
	case "Redis":
		if u := os.Getenv(RedisURLEnv); u != "" {
			s.Backends.Redis.URL = u
		}
		if s.Backends.Redis.URL == "" {
			s.Backends.Redis.URL = DefaultRedisURL
		}
	default:
		return fmt.Errorf("config: session_storage_type %q must be Cookie, Memory, Redis or the storage_type", c.SessionStorageType)
	}
	return nil
}

func (p *PostgresConfig) normalize() error {
	if p.Host == "" {
		p.Host = "localhost"
	}
	if p.Port == 0 {
		p.Port = 5432
	}
	if p.Port < 0 || p.Port > 65535 {
		return fmt.Errorf("config: [storage_backend.backends.postgres] port %d", p.Port)
	}
	if p.DB == "" {
		p.DB = "postgres"
	}
	if p.Username == "" {
		p.Username = "postgres"
	}
	if p.SealingKeyPath == "" {
		return fmt.Errorf("config: storage_type Postgres needs [storage_backend.backends.postgres] sealing_key_path: " +
			"a file of 32 random bytes every replica reads (head -c 32 /dev/urandom), kept out of the database")
	}
	return nil
}
