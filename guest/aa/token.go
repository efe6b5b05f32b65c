package aa

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/cocoon-cc/cocoon/guest/attester"
	"github.com/cocoon-cc/cocoon/jose"
	"github.com/cocoon-cc/cocoon/kbs/client"
	"github.com/cocoon-cc/cocoon/protocol"
)

// Errors of GetToken; the ttrpc layer maps each to a status code.
var (
	// ErrTokenType is an unknown token type.
	ErrTokenType = errors.New("aa: unsupported token type")
	// ErrNotConfigured is a token type without its [token_configs] entry.
	ErrNotConfigured = errors.New("aa: token type not configured")
	// ErrUnreachable wraps the last failure after all retries to reach
	// every configured KBS (or AS).
	ErrUnreachable = errors.New("aa: attestation server unreachable")
	// ErrRefused reports that the server answered and refused attestation.
	ErrRefused = errors.New("aa: attestation refused")
)

// kbsToken is GetToken("kbs")'s answer, as guest-components writes it: the
// token and the PEM private key it vouches for (the CDH decrypts with it).
type kbsToken struct {
	Token      string `json:"token"`
	TeeKeypair string `json:"tee_keypair"`
}

// Retry tunes how a token getter retries an unreachable server.
type Retry struct {
	// Attempts per server; 3 when zero.
	Attempts int
	// Backoff before the second attempt, doubling after; 200ms when zero.
	Backoff time.Duration
	// Timeout of one attempt; 30s when zero.
	Timeout time.Duration
}

func (r Retry) withDefaults() Retry {
	if r.Attempts <= 0 {
		r.Attempts = 3
	}
	if r.Backoff <= 0 {
		r.Backoff = 200 * time.Millisecond
	}
	if r.Timeout <= 0 {
		r.Timeout = 30 * time.Second
	}
	return r
}

// retry runs f until it succeeds, fails permanently or runs out of
// attempts. Only transport failures and server faults are retried.
func (r Retry) retry(ctx context.Context, f func(context.Context) error) error {
	var err error
	wait := r.Backoff
	for i := range r.Attempts {
		if i > 0 {
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				return fmt.Errorf("%w: %w", ErrUnreachable, errors.Join(err, ctx.Err()))
			case <-t.C:
			}
			wait *= 2
		}
		actx, cancel := context.WithTimeout(ctx, r.Timeout)
		err = f(actx)
		cancel()
		if err == nil || !transient(err) {
			return err
		}
	}
	return fmt.Errorf("%w: %w", ErrUnreachable, err)
}

// errServerFault marks a server's own failure (HTTP 5xx): worth a retry.
var errServerFault = errors.New("server fault")

// transient says whether another attempt may succeed: after a transport
// failure, a server fault or a KBS busy with this client (429), not after
// a verdict or a local failure.
func transient(err error) bool {
	var kerr *protocol.Error
	if errors.As(err, &kerr) {
		switch kerr.Kind {
		case protocol.KindInternal, protocol.KindPluginInternal, protocol.KindTooManyRequests:
			return true
		}
		return false
	}
	var uerr *url.Error
	return errors.As(err, &uerr) || errors.Is(err, errServerFault)
}

// cachedToken is a token with its answer bytes and refresh time.
type cachedToken struct {
	answer    []byte
	refreshAt time.Time
}

// tokenCache keeps one token per type until shortly before it expires.
type tokenCache struct {
	now func() time.Time
	mu  sync.Mutex
	m   map[string]cachedToken
}

func (c *tokenCache) get(typ string) ([]byte, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	t, ok := c.m[typ]
	if !ok || !c.now().Before(t.refreshAt) {
		return nil, false
	}
	return t.answer, true
}

// put caches answer until a margin before the token's exp: a tenth of its
// lifetime, at most a minute. A token without exp is not cached.
func (c *tokenCache) put(typ string, answer []byte, token string) {
	iat, exp, ok := tokenTimes(token)
	if !ok {
		return
	}
	now := c.now()
	if iat.IsZero() || iat.After(now) {
		iat = now
	}
	margin := min(exp.Sub(iat)/10, time.Minute)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[string]cachedToken{}
	}
	c.m[typ] = cachedToken{answer: answer, refreshAt: exp.Add(-margin)}
}

// tokenTimes reads iat and exp from a JWT without verifying it: the agent
// only schedules a refresh with them; relying parties verify the token.
func tokenTimes(token string) (iat, exp time.Time, ok bool) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return iat, exp, false
	}
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return iat, exp, false
	}
	var c struct {
		Iat *json.Number `json:"iat"`
		Exp *json.Number `json:"exp"`
	}
	if json.Unmarshal(raw, &c) != nil || c.Exp == nil {
		return iat, exp, false
	}
	e, err := c.Exp.Int64()
	if err != nil {
		return iat, exp, false
	}
	if c.Iat != nil {
		if i, err := c.Iat.Int64(); err == nil {
			iat = time.Unix(i, 0)
		}
	}
	return iat, time.Unix(e, 0), true
}

// kbsGetter gets KBS tokens by running RCAR with a fresh TEE key.
type kbsGetter struct {
	urls     []string
	http     func() *http.Client
	keyAlg   string
	attester attester.Attester
	initData []byte
	retry    Retry
}

func newKBSGetter(c *KBSConfig, a attester.Attester, initData []byte, r Retry) (*kbsGetter, error) {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if c.Cert != "" {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM([]byte(c.Cert)) {
			return nil, fmt.Errorf("%w: token_configs.kbs cert holds no PEM certificate", ErrConfig)
		}
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	newClient := func() *http.Client {
		jar, _ := cookiejar.New(nil)
		return &http.Client{Jar: jar, Transport: tr}
	}
	return &kbsGetter{urls: append([]string{c.URL}, c.FallbackURLs...), http: newClient,
		keyAlg: c.TeeKeyAlgorithm, attester: a, initData: initData, retry: r.withDefaults()}, nil
}

// get attests to each KBS in turn until one issues a token.
func (g *kbsGetter) get(ctx context.Context) (answer []byte, token string, err error) {
	key, keyPEM, err := newTEEKey(g.keyAlg)
	if err != nil {
		return nil, "", err
	}
	var errs []error
	for _, u := range g.urls {
		c, err := client.New(u, g.attester, client.Options{HTTP: g.http(), Key: key, InitData: g.initData})
		if err != nil {
			return nil, "", err
		}
		err = g.retry.retry(ctx, func(ctx context.Context) (err error) {
			token, err = c.Attest(ctx)
			return err
		})
		var kerr *protocol.Error
		switch {
		case err == nil:
			answer, err = json.Marshal(kbsToken{Token: token, TeeKeypair: string(keyPEM)})
			return answer, token, err
		case errors.As(err, &kerr) && !transient(err):
			return nil, "", fmt.Errorf("%w: KBS %s: %w", ErrRefused, u, err)
		}
		errs = append(errs, fmt.Errorf("KBS %s: %w", u, err))
	}
	return nil, "", errors.Join(errs...)
}

// newTEEKey makes a key pair of a kbs_protocol TeeKeyAlgorithm and its PEM
// as guest-components exports it: PKCS#8 for EC, PKCS#1 for RSA.
func newTEEKey(alg string) (*jose.TEEKey, []byte, error) {
	var block *pem.Block
	var priv any
	switch alg {
	case "", KeyP256, KeyP521:
		curve := elliptic.P256()
		if alg == KeyP521 {
			curve = elliptic.P521()
		}
		k, err := ecdsa.GenerateKey(curve, rand.Reader)
		if err != nil {
			return nil, nil, err
		}
		der, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			return nil, nil, err
		}
		priv, block = k, &pem.Block{Type: "PRIVATE KEY", Bytes: der}
	case KeyRSA:
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			return nil, nil, err
		}
		priv, block = k, &pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)}
	default:
		return nil, nil, fmt.Errorf("%w: tee_key_algorithm %q", ErrConfig, alg)
	}
	key, err := jose.NewTEEKey(priv)
	if err != nil {
		return nil, nil, err
	}
	return key, pem.EncodeToMemory(block), nil
}
