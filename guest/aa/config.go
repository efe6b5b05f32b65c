package aa

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/BurntSushi/toml"
)

// DefaultInitPCR is where runtime events go when a request names no
// register: PCR 17, as guest-components (dynamic root of trust).
const DefaultInitPCR = 17

// MaxConfigSize bounds aa.toml and the kernel command line.
const MaxConfigSize = 1 << 20

// ErrConfig reports an unusable aa.toml or aa_kbc_params.
var ErrConfig = errors.New("aa: invalid configuration")

// Config is aa.toml, with guest-components' keys.
type Config struct {
	TokenConfigs   TokenConfigs   `toml:"token_configs"`
	EventlogConfig EventlogConfig `toml:"eventlog_config"`
	Log            LogConfig      `toml:"log"`
}

// TokenConfigs say where tokens come from, per token type.
type TokenConfigs struct {
	KBS    *KBSConfig    `toml:"kbs"`
	CoCoAS *CoCoASConfig `toml:"coco_as"`
}

// KBSConfig is [token_configs.kbs].
type KBSConfig struct {
	URL string `toml:"url"`
	// Cert is the PEM text (not a file) of the KBS's HTTPS root.
	Cert string `toml:"cert"`
	// TeeKeyAlgorithm is "ECDH-ES+A256KW-P256" (default),
	// "ECDH-ES+A256KW-P521" or "RSA-OAEP-256".
	TeeKeyAlgorithm string `toml:"tee_key_algorithm"`
	// FallbackURLs are more KBSes tried in order when URL cannot be
	// reached (a Cocoon extension; guest-components ignores it).
	FallbackURLs []string `toml:"fallback_urls"`
}

// CoCoASConfig is [token_configs.coco_as].
type CoCoASConfig struct {
	URL string `toml:"url"`
}

// EventlogConfig is [eventlog_config].
type EventlogConfig struct {
	InitPCR        uint64 `toml:"init_pcr"`
	EnableEventlog bool   `toml:"enable_eventlog"`
}

// LogConfig is [log].
type LogConfig struct {
	Level string `toml:"level"`
}

// The TEE key algorithms of kbs_protocol's TeeKeyAlgorithm.
const (
	KeyP256 = "ECDH-ES+A256KW-P256"
	KeyP521 = "ECDH-ES+A256KW-P521"
	KeyRSA  = "RSA-OAEP-256"
)

// DefaultConfig is what runs without aa.toml.
func DefaultConfig() Config {
	return Config{EventlogConfig: EventlogConfig{InitPCR: DefaultInitPCR}, Log: LogConfig{Level: "info"}}
}

// ParseConfig reads aa.toml. Unknown keys are ignored, as upstream's
// serde does, so one file serves both implementations.
func ParseConfig(data []byte) (Config, error) {
	c := DefaultConfig()
	if len(data) > MaxConfigSize {
		return c, fmt.Errorf("%w: %d bytes", ErrConfig, len(data))
	}
	if _, err := toml.Decode(string(data), &c); err != nil {
		return c, fmt.Errorf("%w: %v", ErrConfig, err)
	}
	return c, c.validate()
}

// LoadConfig reads aa.toml from path.
func LoadConfig(path string) (Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return DefaultConfig(), fmt.Errorf("%w: %v", ErrConfig, err)
	}
	return ParseConfig(data)
}

// maxPCR bounds init_pcr: a PC Client TPM has 24 PCRs, onto which TDX's
// RTMRs are mapped too.
const maxPCR = 23

func (c *Config) validate() error {
	if c.EventlogConfig.InitPCR > maxPCR {
		return fmt.Errorf("%w: eventlog_config.init_pcr %d exceeds %d", ErrConfig, c.EventlogConfig.InitPCR, maxPCR)
	}
	if k := c.TokenConfigs.KBS; k != nil {
		for _, u := range append([]string{k.URL}, k.FallbackURLs...) {
			if !strings.HasPrefix(u, "http://") && !strings.HasPrefix(u, "https://") {
				return fmt.Errorf("%w: token_configs.kbs url %q is not http(s)", ErrConfig, u)
			}
		}
		switch k.TeeKeyAlgorithm {
		case "", KeyP256, KeyP521, KeyRSA:
		default:
			return fmt.Errorf("%w: tee_key_algorithm %q", ErrConfig, k.TeeKeyAlgorithm)
		}
	}
	if a := c.TokenConfigs.CoCoAS; a != nil && !strings.HasPrefix(a.URL, "http://") && !strings.HasPrefix(a.URL, "https://") {
		return fmt.Errorf("%w: token_configs.coco_as url %q is not http(s)", ErrConfig, a.URL)
	}
	return nil
}

// KbcParams is agent.aa_kbc_params, "<kbc>::<uri>".
type KbcParams struct {
	KBC string
	URI string
}

const kbcParamsKey = "agent.aa_kbc_params="

// ParseKbcParams parses "<kbc>::<uri>".
func ParseKbcParams(s string) (KbcParams, error) {
	kbc, uri, ok := strings.Cut(s, "::")
	if !ok || strings.Contains(uri, "::") || kbc == "" {
		return KbcParams{}, fmt.Errorf("%w: aa_kbc_params %q is not <kbc>::<uri>", ErrConfig, s)
	}
	return KbcParams{KBC: kbc, URI: uri}, nil
}

// KbcParamsFromCmdline finds agent.aa_kbc_params in a kernel command line;
// ok is false when it is absent.
func KbcParamsFromCmdline(cmdline string) (p KbcParams, ok bool, err error) {
	for _, f := range strings.Fields(cmdline) {
		if v, found := strings.CutPrefix(f, kbcParamsKey); found {
			p, err = ParseKbcParams(v)
			return p, err == nil, err
		}
	}
	return KbcParams{}, false, nil
}

// ApplyCmdline fills [token_configs.kbs] from agent.aa_kbc_params on the
// kernel command line at path (/proc/cmdline) when aa.toml names no KBS,
// as guest-components does without a config file. Only the cc_kbc KBC
// speaks the KBS protocol.
func (c *Config) ApplyCmdline(path string) error {
	if c.TokenConfigs.KBS != nil {
		return nil
	}
	data, err := readLimited(path)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrConfig, err)
	}
	p, ok, err := KbcParamsFromCmdline(string(data))
	if err != nil || !ok {
		return err
	}
	if p.KBC != "cc_kbc" {
		return fmt.Errorf("%w: aa_kbc_params names kbc %q, want cc_kbc", ErrConfig, p.KBC)
	}
	c.TokenConfigs.KBS = &KBSConfig{URL: p.URI}
	if err := c.validate(); err != nil {
		c.TokenConfigs.KBS = nil
		return err
	}
	return nil
}

func readLimited(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, MaxConfigSize))
}
