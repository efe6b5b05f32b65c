// Package client is the KBS protocol client: the RCAR handshake, resource
// fetches and the admin API. kbs-client, the attestation agent and the
// tests all use it, against a Cocoon KBS or Trustee's.
package client

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	jsonv2 "github.com/go-json-experiment/json"
	jsonv1 "github.com/go-json-experiment/json/v1"

	"github.com/cocoon-cc/cocoon/guest/attester"
	"github.com/cocoon-cc/cocoon/jose"
	"github.com/cocoon-cc/cocoon/protocol"
)

// MaxResponseSize bounds what is read from the KBS.
const MaxResponseSize = 16 << 20

// HTTPClient returns an HTTP client for a KBS, trusting certFile's PEM
// roots for https when given.
func HTTPClient(certFile string) (*http.Client, error) {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 64
	if certFile != "" {
		pem, err := os.ReadFile(certFile)
		if err != nil {
			return nil, fmt.Errorf("kbs client: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("kbs client: no certificate in %s", certFile)
		}
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	return &http.Client{Transport: tr, Timeout: 60 * time.Second}, nil
}

// Client runs the RCAR handshake and fetches resources.
type Client struct {
	url      string
	http     *http.Client
	attester attester.Attester
	devices  []attester.Attester
	key      *jose.TEEKey
	initData []byte

	// attesting serializes handshakes: they share the session cookie, so
	// two at once would answer each other's challenge.
	attesting sync.Mutex
	mu        sync.Mutex
	token     string
	nonce     string // the challenge token answered, "" for a token given in Options
	session   string // the RCAR session cookie, when HTTP has no jar
}

// Options configure a Client.
type Options struct {
	// HTTP is the client to use, HTTPClient("") if nil. Clients may share
	// it: each keeps its own session cookie. (If it has a cookie jar, the
	// jar keeps the cookie instead, for every client sharing it.)
	HTTP *http.Client
	// Key is the TEE key; a new P-256 key if nil.
	Key *jose.TEEKey
	// InitData is the initdata TOML the TEE was launched with, if any.
	InitData []byte
	// Token is an attestation token obtained before (used as a bearer
	// token; Key must be the key it vouches for).
	Token string
	// Devices attest the TEE's devices (GPUs); their evidence goes with
	// the primary evidence as additional evidence.
	Devices []attester.Attester
}

// New returns a Client for the KBS at url, attesting with a.
func New(url string, a attester.Attester, o Options) (*Client, error) {
	var err error
	if o.HTTP == nil {
		if o.HTTP, err = HTTPClient(""); err != nil {
			return nil, err
		}
	}
	if o.Key == nil {
		if o.Key, err = jose.GenerateTEEKey("EC"); err != nil {
			return nil, err
		}
	}
	return &Client{url: strings.TrimRight(url, "/"), http: o.HTTP, attester: a, devices: o.Devices, key: o.Key,
		initData: o.InitData, token: o.Token}, nil
}

// Key is the client's TEE key.
func (c *Client) Key() *jose.TEEKey { return c.key }

// Attest runs the RCAR handshake and returns the attestation token.
func (c *Client) Attest(ctx context.Context) (string, error) {
	c.attesting.Lock()
	defer c.attesting.Unlock()
	return c.attest(ctx)
}

// refresh attests unless, while it waited for another handshake, the
// token stale was replaced.
func (c *Client) refresh(ctx context.Context, stale string) error {
	c.attesting.Lock()
	defer c.attesting.Unlock()
	if c.currentToken() != stale {
		return nil
	}
	_, err := c.attest(ctx)
	return err
}

func (c *Client) currentToken() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.token
}

func (c *Client) attest(ctx context.Context) (string, error) {
	if c.attester == nil {
		return "", errors.New("kbs client: no attester to attest with")
	}
	var ch protocol.Challenge
	req := protocol.Request{Version: protocol.Version, Tee: c.attester.Tee(), ExtraParams: json.RawMessage(`{}`)}
	if err := c.do(ctx, http.MethodPost, "/kbs/v0/auth", "", req, &ch); err != nil {
		return "", fmt.Errorf("auth: %w", err)
	}
	att, err := c.attestation(ctx, ch.Nonce)
	if err != nil {
		return "", err
	}
	var tok protocol.AttestationToken
	if err := c.do(ctx, http.MethodPost, "/kbs/v0/attest", "", att, &tok); err != nil {
		return "", fmt.Errorf("attest: %w", err)
	}
	c.mu.Lock()
	c.token, c.nonce = tok.Token, ch.Nonce
	c.mu.Unlock()
	return tok.Token, nil
}

// attestation builds the Attestation answering nonce.
func (c *Client) attestation(ctx context.Context, nonce string) (*protocol.Attestation, error) {
	additional, err := c.additionalEvidence(ctx, nonce)
	if err != nil {
		return nil, err
	}
	rd, err := protocol.ReportDataOf(c.attester.Tee(), protocol.RuntimeDataClaims(nonce, c.key.Public(), &additional))
	if err != nil {
		return nil, err
	}
	var ev json.RawMessage
	if ca, ok := c.attester.(attester.Challenged); ok {
		ev, err = ca.EvidenceFor(ctx, nonce, rd)
	} else {
		ev, err = c.attester.Evidence(ctx, rd)
	}
	if err != nil {
		return nil, fmt.Errorf("evidence: %w", err)
	}
	att := &protocol.Attestation{
		RuntimeData: protocol.RuntimeData{Nonce: nonce, TeePubKey: c.key.Public()},
		TeeEvidence: protocol.CompositeEvidence{Primary: ev, Additional: additional},
	}
	if c.initData != nil {
		att.InitData = &protocol.InitData{Format: "toml", Body: string(c.initData)}
	}
	return att, nil
}

// additionalEvidence is the devices' evidence as guest-components sends
// it: a JSON object from TEE name to evidence, each bound to the runtime
// data without additional evidence; "" without devices.
func (c *Client) additionalEvidence(ctx context.Context, nonce string) (string, error) {
	if len(c.devices) == 0 {
		return "", nil
	}
	rd, err := protocol.ReportData(protocol.RuntimeDataClaims(nonce, c.key.Public(), nil))
	if err != nil {
		return "", err
	}
	evidence := make(map[protocol.Tee]json.RawMessage, len(c.devices))
	for _, d := range c.devices {
		if evidence[d.Tee()], err = d.Evidence(ctx, rd); err != nil {
			return "", fmt.Errorf("%s evidence: %w", d.Tee(), err)
		}
	}
	b, err := json.Marshal(evidence)
	return string(b), err
}

// GetResource returns the plaintext of repo/type/tag[?query], attesting
// first when there is no token yet and once more when the KBS no longer
// accepts it. Each segment must follow the KBS's rule and the query, the
// caller's resource plugin parameters, is sent re-encoded, so no segment
// can smuggle one in.
func (c *Client) GetResource(ctx context.Context, path string) ([]byte, error) {
	p, query, err := protocol.ParseResourceRequest(strings.TrimPrefix(path, "/"))
	if err != nil {
		return nil, err
	}
	path = p.String()
	if query != "" {
		path += "?" + query
	}
	var out []byte
	err = c.withToken(ctx, func(token, _ string) error {
		var resp protocol.Response
		if err := c.do(ctx, http.MethodGet, "/kbs/v0/resource/"+path, token, nil, &resp); err != nil {
			return fmt.Errorf("get resource %s: %w", path, err)
		}
		out, err = c.key.Decrypt(&resp)
		return err
	})
	return out, err
}

// withToken calls fn with the token and the nonce of its session,
// attesting first when there is no token yet and once more when the KBS
// no longer accepts it.
func (c *Client) withToken(ctx context.Context, fn func(token, nonce string) error) error {
	token, nonce := c.tokenAndNonce()
	if token == "" {
		if err := c.refresh(ctx, ""); err != nil {
			return err
		}
		token, nonce = c.tokenAndNonce()
	}
	err := fn(token, nonce)
	var kerr *protocol.Error
	if errors.As(err, &kerr) && c.attester != nil &&
		(kerr.Kind == protocol.KindTokenNotFound || kerr.Kind == protocol.KindTokenVerifier) {
		if err := c.refresh(ctx, token); err != nil {
			return err
		}
		return fn(c.tokenAndNonce())
	}
	return err
}

// tokenAndNonce is the current token and its session's nonce.
func (c *Client) tokenAndNonce() (string, string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.token, c.nonce
}

// do sends a JSON request (body nil for none) with the session cookie and
// decodes a JSON answer into out (nil to ignore it). KBS error bodies
// become *protocol.Error. The bearer token goes along only when there is
// no session cookie: the KBS finds the token by the session, as Trustee's
// own client relies on, and the token is a header of over a KiB that both
// sides would handle on every fetch. Should the KBS no longer know the
// session (memory sessions after a restart), the request is sent again
// with the bearer token before the caller attests again.
func (c *Client) do(ctx context.Context, method, path, bearer string, body, out any) error {
	raw, ok := body.([]byte)
	if !ok && body != nil {
		var err error
		if raw, err = jsonv2.Marshal(body, jsonv1.DefaultOptionsV1()); err != nil {
			return err
		}
	}
	reader := func() io.Reader {
		if raw == nil {
			return nil
		}
		return bytes.NewReader(raw)
	}
	if c.http.Jar != nil {
		_, err := roundTrip(ctx, c.http, method, c.url+path, bearer, "", reader(), out)
		return err
	}
	c.mu.Lock()
	session := c.session
	c.mu.Unlock()
	sent := bearer
	if session != "" {
		sent = ""
	}
	set, err := roundTrip(ctx, c.http, method, c.url+path, sent, session, reader(), out)
	var kerr *protocol.Error
	if sent != bearer && errors.As(err, &kerr) && kerr.Kind == protocol.KindTokenNotFound {
		var again string
		if again, err = roundTrip(ctx, c.http, method, c.url+path, bearer, session, reader(), out); again != "" {
			set = again
		}
	}
	if set != "" {
		c.mu.Lock()
		c.session = set
		c.mu.Unlock()
	}
	return err
}

// Do performs one KBS API call.
func Do(ctx context.Context, hc *http.Client, method, url, bearer string, body io.Reader, out any) error {
	_, err := roundTrip(ctx, hc, method, url, bearer, "", body, out)
	return err
}

// roundTrip performs one KBS API call, with the session cookie when
// session is not empty, and returns the session cookie the KBS set, if any.
// readResponse reads a (size-limited) response body, in one read when its
// length is known: io.ReadAll's regrowth was a tenth of a handshake's
// allocations.
func readResponse(resp *http.Response) ([]byte, error) {
	var buf bytes.Buffer
	if n := resp.ContentLength; n > 0 && n <= MaxResponseSize {
		buf.Grow(int(n) + bytes.MinRead)
	}
	_, err := buf.ReadFrom(io.LimitReader(resp.Body, MaxResponseSize))
	return buf.Bytes(), err
}

func roundTrip(ctx context.Context, hc *http.Client, method, url, bearer, session string, body io.Reader, out any) (string, error) {
	req, err := http.NewRequestWithContext(ctx, method, url, body)
	if err != nil {
		return "", err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	if session != "" {
		req.Header.Set("Cookie", protocol.SessionCookie+"="+session)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	set := sessionCookie(resp.Header)
	b, err := readResponse(resp)
	if err != nil {
		return set, err
	}
	if resp.StatusCode != http.StatusOK {
		var info protocol.ErrorInformation
		if json.Unmarshal(b, &info) == nil {
			if kerr, ok := protocol.ParseErrorInformation(info); ok {
				return set, kerr
			}
		}
		return set, fmt.Errorf("HTTP %d: %s", resp.StatusCode, bytes.TrimSpace(b))
	}
	if out == nil {
		return set, nil
	}
	if raw, ok := out.(*[]byte); ok {
		*raw = b
		return set, nil
	}
	// encoding/json/v2's decoder: three to five times as fast on the KBS's
	// answers (the token is a string of KiBs), as strict as Trustee's own
	// client (names match exactly; no duplicate names, no invalid UTF-8).
	if err := jsonv2.Unmarshal(b, out); err != nil {
		return set, fmt.Errorf("decode answer: %w", err)
	}
	return set, nil
}

// sessionCookie is the value of the RCAR session cookie a response sets.
// Only its name=value pair is read: the client keeps no attributes (the
// session expires at the KBS), and the value, which the KBS parses when
// it comes back, may be KiBs (a session the client holds).
func sessionCookie(h http.Header) string {
	for _, line := range h["Set-Cookie"] {
		pair, _, _ := strings.Cut(line, ";")
		value, ok := strings.CutPrefix(strings.TrimSpace(pair), protocol.SessionCookie+"=")
		value = strings.Trim(value, `"`)
		if ok && value != "" && !strings.ContainsAny(value, " \t\",;\\") {
			return value
		}
	}
	return ""
}
