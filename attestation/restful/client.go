package restful

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"

	gojose "github.com/go-jose/go-jose/v4"

	"github.com/cocoon-cc/cocoon/attestation"
	"github.com/cocoon-cc/cocoon/protocol"
)

// Client calls a remote attestation service (Cocoon's or Trustee's
// restful-as).
type Client struct {
	url  string
	http *http.Client
}

// NewClient returns a client of the service at url.
func NewClient(url string, hc *http.Client) *Client {
	return &Client{url: strings.TrimRight(url, "/"), http: hc}
}

// Evaluate posts the requests and returns the token.
func (c *Client) Evaluate(ctx context.Context, reqs []attestation.Request, policyID string) (string, error) {
	body := protocol.ASAttestationRequest{PolicyIDs: []string{policyID}}
	for _, r := range reqs {
		v, err := wireRequest(r)
		if err != nil {
			return "", err
		}
		body.VerificationRequests = append(body.VerificationRequests, v)
	}
	b, err := json.Marshal(body)
	if err != nil {
		return "", err
	}
	out, err := c.do(ctx, http.MethodPost, "/attestation", b)
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(out)), nil
}

func wireRequest(r attestation.Request) (protocol.ASVerificationRequest, error) {
	v := protocol.ASVerificationRequest{Tee: string(r.Tee), RuntimeDataHashAlgorithm: r.HashAlgorithm,
		Evidence: base64.RawURLEncoding.EncodeToString(r.Evidence)}
	switch {
	case r.RuntimeData != nil:
		b, err := json.Marshal(r.RuntimeData)
		if err != nil {
			return v, err
		}
		v.RuntimeData = &protocol.ASRuntimeData{Structured: b}
	case r.RawRuntimeData != nil:
		raw := base64.RawURLEncoding.EncodeToString(r.RawRuntimeData)
		v.RuntimeData = &protocol.ASRuntimeData{Raw: &raw}
	}
	if r.InitData != nil {
		if r.InitData.TOML != nil {
			t := string(r.InitData.TOML)
			v.InitData = &protocol.ASInitData{TOML: &t}
		} else {
			d := base64.RawURLEncoding.EncodeToString(r.InitData.Digest)
			v.InitData = &protocol.ASInitData{Digest: &d}
		}
	}
	return v, nil
}

// JWKS fetches the service's token signing keys.
func (c *Client) JWKS(ctx context.Context) ([]gojose.JSONWebKey, error) {
	b, err := c.do(ctx, http.MethodGet, "/.well-known/jwks.json", nil)
	if err != nil {
		return nil, err
	}
	var set gojose.JSONWebKeySet
	if err := json.Unmarshal(b, &set); err != nil {
		return nil, fmt.Errorf("attestation service JWKS: %w", err)
	}
	return set.Keys, nil
}

// RemoteError is an answer of the remote service other than 200.
type RemoteError struct {
	Status int
	Body   string
}

func (e *RemoteError) Error() string {
	return fmt.Sprintf("attestation service: HTTP %d: %s", e.Status, e.Body)
}

func (c *Client) do(ctx context.Context, method, path string, body []byte) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.url+path, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("attestation service: %w", err)
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(io.LimitReader(resp.Body, MaxBody))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Error string `json:"error"`
		}
		msg := string(bytes.TrimSpace(out))
		if json.Unmarshal(out, &e) == nil && e.Error != "" {
			msg = e.Error
		}
		return nil, &RemoteError{Status: resp.StatusCode, Body: msg}
	}
	return out, nil
}
