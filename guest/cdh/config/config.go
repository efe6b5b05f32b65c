// Package config reads cdh.toml, the confidential data hub's configuration
// file, with guest-components' keys and defaults.
package config

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/BurntSushi/toml"

	"github.com/cocoon-cc/cocoon/guest/cdh/resource"
)

// Defaults, as upstream.
const (
	DefaultSocket   = "unix:///run/confidential-containers/cdh.sock"
	DefaultAASocket = "unix:///run/confidential-containers/attestation-agent/attestation-agent.sock"
	// KBCName is the only KBC Cocoon serves: the RCAR client.
	KBCName = "cc_kbc"
	// CredentialDir is where [[credentials]] may be written (a tmpfs).
	CredentialDir = "/run/confidential-containers/cdh/kbs"
)

var (
	// ErrInvalid: the file does not parse or a value is out of range.
	ErrInvalid = errors.New("invalid cdh config")
	// ErrUnknownKey: a key the CDH does not know (a typo would otherwise
	// silently weaken the configuration).
	ErrUnknownKey = errors.New("unknown cdh config key")
)

// Config is cdh.toml.
type Config struct {
	Socket string `toml:"socket"`
	AA     AA     `toml:"aa"`
	KBC    KBC    `toml:"kbc"`
	// Credentials are fetched from the KBS at start and written to Path.
	Credentials []Credential `toml:"credentials"`
	Image       Image        `toml:"image"`
	// SkipSealedSecretVerification trusts unsigned sealed secrets.
	SkipSealedSecretVerification bool `toml:"skip_sealed_secret_verification"`
	Log                          Log  `toml:"log"`
}

// AA locates the attestation agent.
type AA struct {
	Socket string `toml:"aa_socket"`
}

// KBC names the key broker client and its KBS.
type KBC struct {
	Name string `toml:"name"`
	URL  string `toml:"url"`
	// KBSCert is the KBS's HTTPS certificate, PEM text.
	KBSCert string `toml:"kbs_cert"`
}

// Credential is a KBS resource placed in a file at start.
type Credential struct {
	ResourceURI string `toml:"resource_uri"`
	Path        string `toml:"path"`
}

// Image is the [image] section, read by the image pipeline.
type Image struct {
	MaxConcurrentLayerDownloadsPerImage int            `toml:"max_concurrent_layer_downloads_per_image"`
	SigstoreConfigURI                   string         `toml:"sigstore_config_uri"`
	ImageSecurityPolicyURI              string         `toml:"image_security_policy_uri"`
	ImageSecurityPolicy                 string         `toml:"image_security_policy"`
	AuthenticatedRegistryCredentialsURI string         `toml:"authenticated_registry_credentials_uri"`
	RegistryConfigurationURI            string         `toml:"registry_configuration_uri"`
	RegistryConfig                      map[string]any `toml:"registry_config"`
	ExtraRootCertificates               []string       `toml:"extra_root_certificates"`
	WorkDir                             string         `toml:"work_dir"`
	// MaxUnpackedSizeMiB bounds what one pull extracts (pull.Options
	// MaxBytes): 0 derives it from the space work_dir has left, -1 lifts
	// it.
	MaxUnpackedSizeMiB int64 `toml:"max_unpacked_size_mib"`
	ImagePullProxy     Proxy `toml:"image_pull_proxy"`
}

// Proxy is [image.image_pull_proxy].
type Proxy struct {
	HTTPSProxy string `toml:"https_proxy"`
	HTTPProxy  string `toml:"http_proxy"`
	NoProxy    string `toml:"no_proxy"`
}

// Log is [log].
type Log struct {
	Level string `toml:"level"`
}

// Default is the configuration before the file is applied.
func Default() Config {
	return Config{Socket: DefaultSocket, AA: AA{Socket: DefaultAASocket}, Log: Log{Level: "info"},
		Image: Image{MaxConcurrentLayerDownloadsPerImage: 3, WorkDir: "/run/image-rs"}}
}

// Load reads and validates the file at path.
func Load(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return Parse(b)
}

// Parse parses and validates cdh.toml text.
func Parse(b []byte) (*Config, error) {
	c := Default()
	md, err := toml.Decode(string(b), &c)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	// [image.registry_config] is free-form registries.conf.
	for _, k := range md.Undecoded() {
		if !strings.HasPrefix(k.String(), "image.registry_config.") {
			return nil, fmt.Errorf("%w: %s", ErrUnknownKey, k)
		}
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

// Validate checks the values.
func (c *Config) Validate() error {
	if c.KBC.Name != KBCName {
		return fmt.Errorf("%w: [kbc] name %q: only %q is supported", ErrInvalid, c.KBC.Name, KBCName)
	}
	if !strings.HasPrefix(c.KBC.URL, "http://") && !strings.HasPrefix(c.KBC.URL, "https://") {
		return fmt.Errorf("%w: [kbc] url %q is not an http(s) URL", ErrInvalid, c.KBC.URL)
	}
	if !strings.HasPrefix(c.Socket, "unix://") || !strings.HasPrefix(c.AA.Socket, "unix://") {
		return fmt.Errorf("%w: socket and aa_socket must be unix:// addresses", ErrInvalid)
	}
	if n := c.Image.MaxUnpackedSizeMiB; n < -1 || n > 1<<40 {
		return fmt.Errorf("%w: [image] max_unpacked_size_mib %d: 0 (from the space left), -1 (no limit) or a size", ErrInvalid, n)
	}
	for _, cr := range c.Credentials {
		if _, err := resource.Parse(cr.ResourceURI); err != nil {
			return fmt.Errorf("%w: credentials: %w", ErrInvalid, err)
		}
		if !InCredentialDir(cr.Path) {
			return fmt.Errorf("%w: credential path %q is not under %s", ErrInvalid, cr.Path, CredentialDir)
		}
	}
	return nil
}

// InCredentialDir reports whether p is a clean path below CredentialDir.
func InCredentialDir(p string) bool {
	rest, ok := strings.CutPrefix(p, CredentialDir+"/")
	if !ok || rest == "" {
		return false
	}
	for _, seg := range strings.Split(rest, "/") {
		if seg == "" || seg == "." || seg == ".." {
			return false
		}
	}
	return true
}

// SocketPath strips the unix:// scheme.
func SocketPath(addr string) string { return strings.TrimPrefix(addr, "unix://") }

// FromKBCParams builds a configuration from aa_kbc_params
// ("cc_kbc::<url>"), as the kernel's agent.aa_kbc_params or the
// AA_KBC_PARAMS variable give it when there is no file.
func FromKBCParams(params string) (*Config, error) {
	name, url, ok := strings.Cut(params, "::")
	if !ok {
		return nil, fmt.Errorf("%w: aa_kbc_params %q is not <kbc>::<url>", ErrInvalid, params)
	}
	c := Default()
	c.KBC = KBC{Name: name, URL: url}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

// KBCParamsFromCmdline returns agent.aa_kbc_params from a kernel command line.
func KBCParamsFromCmdline(cmdline string) (string, bool) {
	for _, f := range strings.Fields(cmdline) {
		if v, ok := strings.CutPrefix(f, "agent.aa_kbc_params="); ok {
			return v, true
		}
	}
	return "", false
}

// Resolve loads path, or without one builds the configuration from the
// AA_KBC_PARAMS variable or the kernel's agent.aa_kbc_params, as upstream.
func Resolve(path string) (*Config, error) {
	if path != "" {
		return Load(path)
	}
	if p := os.Getenv("AA_KBC_PARAMS"); p != "" {
		return FromKBCParams(p)
	}
	cmdline, err := os.ReadFile("/proc/cmdline")
	if err != nil {
		return nil, fmt.Errorf("%w: no config file and %w", ErrInvalid, err)
	}
	p, ok := KBCParamsFromCmdline(string(cmdline))
	if !ok {
		return nil, fmt.Errorf("%w: no config file, AA_KBC_PARAMS or agent.aa_kbc_params", ErrInvalid)
	}
	return FromKBCParams(p)
}
