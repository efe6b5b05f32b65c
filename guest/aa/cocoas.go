package aa

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/cocoon-cc/cocoon/guest/attester"
	"github.com/cocoon-cc/cocoon/kbs/client"
)

// cocoASGetter gets a token from an attestation service's REST API
// (POST /attestation), as guest-components' coco_as token type: evidence
// over empty report data, so the token binds no key or nonce.
type cocoASGetter struct {
	url      string
	http     *http.Client
	attester attester.Attester
	retry    Retry
}

func (g *cocoASGetter) get(ctx context.Context) (answer []byte, token string, err error) {
	ev, err := g.attester.Evidence(ctx, nil)
	if err != nil {
		return nil, "", fmt.Errorf("aa: evidence: %w", err)
	}
	body, err := json.Marshal(map[string]any{
		"verification_requests": []map[string]string{{
			"tee":      string(g.attester.Tee()),
			"evidence": base64.RawURLEncoding.EncodeToString(ev),
		}},
		"policy_ids": []string{},
	})
	if err != nil {
		return nil, "", err
	}
	err = g.retry.retry(ctx, func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, g.url+"/attestation", bytes.NewReader(body))
		if err != nil {
			return err
		}
		req.Header.Set("Content-Type", "application/json")
		resp, err := g.http.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(io.LimitReader(resp.Body, client.MaxResponseSize))
		if err != nil {
			return err
		}
		switch {
		case resp.StatusCode >= 500:
			return fmt.Errorf("attestation service: %w: HTTP %d", errServerFault, resp.StatusCode)
		case resp.StatusCode != http.StatusOK:
			return fmt.Errorf("%w: attestation service: HTTP %d: %s", ErrRefused, resp.StatusCode, bytes.TrimSpace(b))
		}
		token = strings.TrimSpace(string(b))
		return nil
	})
	if err != nil {
		return nil, "", err
	}
	return []byte(token), token, nil
}
