package restapi

import (
	"context"
	"net"

	"github.com/containerd/ttrpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	aapb "github.com/cocoon-cc/cocoon/protocol/ttrpc/aa"
	cdhpb "github.com/cocoon-cc/cocoon/protocol/ttrpc/cdh"
)

// socket connects to a guest daemon for each call: a local unix socket
// costs little to dial, and the REST server then outlives restarts of the
// daemons behind it and may start before them.
type socket string

func (s socket) call(ctx context.Context, fn func(*ttrpc.Client) error) error {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", string(s))
	if err != nil {
		return status.Error(codes.Unavailable, err.Error())
	}
	c := ttrpc.NewClient(conn)
	defer c.Close()
	return fn(c)
}

// CDHSocket is the data hub at a unix socket path.
type CDHSocket string

// GetResource implements CDH.
func (p CDHSocket) GetResource(ctx context.Context, r *cdhpb.GetResourceRequest) (resp *cdhpb.GetResourceResponse, err error) {
	err = socket(p).call(ctx, func(c *ttrpc.Client) error {
		resp, err = cdhpb.NewGetResourceServiceClient(c).GetResource(ctx, r)
		return err
	})
	return resp, err
}

// AASocket is the attestation agent at a unix socket path.
type AASocket string

// GetToken implements AA.
func (p AASocket) GetToken(ctx context.Context, r *aapb.GetTokenRequest) (resp *aapb.GetTokenResponse, err error) {
	err = socket(p).call(ctx, func(c *ttrpc.Client) error {
		resp, err = aapb.NewAttestationAgentServiceClient(c).GetToken(ctx, r)
		return err
	})
	return resp, err
}

// GetEvidence implements AA.
func (p AASocket) GetEvidence(ctx context.Context, r *aapb.GetEvidenceRequest) (resp *aapb.GetEvidenceResponse, err error) {
	err = socket(p).call(ctx, func(c *ttrpc.Client) error {
		resp, err = aapb.NewAttestationAgentServiceClient(c).GetEvidence(ctx, r)
		return err
	})
	return resp, err
}
