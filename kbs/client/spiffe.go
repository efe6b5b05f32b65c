package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"github.com/cocoon-cc/cocoon/protocol"
)

// ErrNoSessionNonce: the client holds a token it did not attest for
// itself, so it cannot bind an SVID request to that token's session.
var ErrNoSessionNonce = errors.New("kbs client: SVID requests need a token of this client's own handshake")

// X509SVID asks the KBS to certify the key of csr (PKCS#10, DER) as the
// X.509-SVID of the ID this guest's initdata names.
func (c *Client) X509SVID(ctx context.Context, csr []byte) (*protocol.X509SVIDResponse, error) {
	var out protocol.X509SVIDResponse
	return &out, c.svid(ctx, protocol.SVIDTypeX509, protocol.SVIDRequest{CSR: csr}, &out)
}

// JWTSVID asks the KBS for a JWT-SVID for audience.
func (c *Client) JWTSVID(ctx context.Context, audience []string) (*protocol.JWTSVIDResponse, error) {
	var out protocol.JWTSVIDResponse
	return &out, c.svid(ctx, protocol.SVIDTypeJWT, protocol.SVIDRequest{Audience: audience}, &out)
}

// svid sends req, bound to the session (its nonce) and signed by the TEE
// key, and opens the sealed answer into out.
func (c *Client) svid(ctx context.Context, typ string, req protocol.SVIDRequest, out any) error {
	return c.withToken(ctx, func(token, nonce string) error {
		if nonce == "" {
			return ErrNoSessionNonce
		}
		req.Nonce = nonce
		payload, err := json.Marshal(req)
		if err != nil {
			return err
		}
		jws, err := c.key.Sign(payload)
		if err != nil {
			return err
		}
		var resp protocol.Response
		if err := c.do(ctx, http.MethodPost, "/kbs/v0/spiffe/"+typ, token, []byte(jws), &resp); err != nil {
			return fmt.Errorf("%s: %w", typ, err)
		}
		plain, err := c.key.Decrypt(&resp)
		if err != nil {
			return fmt.Errorf("%s: %w", typ, err)
		}
		if err := json.Unmarshal(plain, out); err != nil {
			return fmt.Errorf("%s: %w", typ, err)
		}
		return nil
	})
}

// SPIFFEBundle fetches the trust domain's SPIFFE bundle (JWKS).
func (c *Client) SPIFFEBundle(ctx context.Context) ([]byte, error) {
	var b []byte
	if err := c.do(ctx, http.MethodGet, "/kbs/v0/spiffe/"+protocol.SPIFFEBundle, "", nil, &b); err != nil {
		return nil, fmt.Errorf("spiffe bundle: %w", err)
	}
	return b, nil
}
