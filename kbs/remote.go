package kbs

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	gojose "github.com/go-jose/go-jose/v4"

	"github.com/cocoon-cc/cocoon/attestation"
	"github.com/cocoon-cc/cocoon/attestation/ear"
	"github.com/cocoon-cc/cocoon/attestation/restful"
	"github.com/cocoon-cc/cocoon/kbs/client"
	"github.com/cocoon-cc/cocoon/protocol"
)

// attestationService is what the KBS needs of an attestation service: the
// built-in one or a remote one.
type attestationService interface {
	Evaluate(ctx context.Context, reqs []attestation.Request, policyID string) (string, *ear.Claims, error)
}

// remoteASManages answers admin calls for what a remote attestation
// service manages itself, as Trustee's endpoint k refuses what its
// attestation service does not support.
func remoteASManages(k protocol.Kind) error {
	return protocol.Errorf(k, "policies and reference values are managed by the remote attestation service")
}

// remoteAS asks a standalone attestation service over its REST API and
// verifies the token it returns with the keys it published.
type remoteAS struct {
	client *restful.Client
	tokens *ear.Verifier
}

func newRemoteAS(ctx context.Context, c ASConfig) (*remoteAS, []gojose.JSONWebKey, error) {
	hc, err := client.HTTPClient(c.ASCertFile)
	if err != nil {
		return nil, nil, err
	}
	hc.Jar = nil
	rc := restful.NewClient(c.ASAddr, hc)
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	keys, err := rc.JWKS(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("kbs: remote attestation service %s: %w", c.ASAddr, err)
	}
	return &remoteAS{client: rc}, keys, nil
}

func (r *remoteAS) Evaluate(ctx context.Context, reqs []attestation.Request, policyID string) (string, *ear.Claims, error) {
	if policyID == "" {
		policyID = attestation.DefaultPolicyID
	}
	tok, err := r.client.Evaluate(ctx, reqs, policyID)
	var rerr *restful.RemoteError
	if errors.As(err, &rerr) && rerr.Status == http.StatusBadRequest {
		return "", nil, fmt.Errorf("%w: %s", attestation.ErrVerification, rerr.Body)
	}
	if err != nil {
		return "", nil, err
	}
	claims, _, err := r.tokens.Verify(tok)
	if err != nil {
		return "", nil, fmt.Errorf("kbs: token from the attestation service: %w", err)
	}
	return tok, claims, nil
}
