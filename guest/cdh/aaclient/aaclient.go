// Package aaclient gets evidence from the attestation agent over ttrpc, as
// upstream's CDH does (kbs_protocol's AA evidence provider): the CDH runs
// the RCAR handshake itself and the AA, which owns the TEE, answers
// GetTeeType and GetEvidence.
package aaclient

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/containerd/ttrpc"

	"github.com/cocoon-cc/cocoon/protocol"
	aapb "github.com/cocoon-cc/cocoon/protocol/ttrpc/aa"
)

// ErrAA: the attestation agent could not be reached or answered badly.
var ErrAA = errors.New("attestation agent")

// callTimeout bounds one call, as upstream's 50 s.
const callTimeout = 50 * time.Second

// Attester implements attester.Attester through the AA.
type Attester struct {
	conn *ttrpc.Client
	aa   aapb.AttestationAgentServiceService
	tee  protocol.Tee
}

// Dial connects to the AA's unix socket and asks its TEE type.
func Dial(ctx context.Context, socket string) (*Attester, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", socket)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrAA, err)
	}
	conn := ttrpc.NewClient(c)
	a := &Attester{conn: conn, aa: aapb.NewAttestationAgentServiceClient(conn)}
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	resp, err := a.aa.GetTeeType(ctx, &aapb.GetTeeTypeRequest{})
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("%w: GetTeeType: %w", ErrAA, err)
	}
	if a.tee, err = protocol.ParseTee(resp.Tee); err != nil {
		conn.Close()
		return nil, fmt.Errorf("%w: GetTeeType: %w", ErrAA, err)
	}
	return a, nil
}

// Tee implements attester.Attester.
func (a *Attester) Tee() protocol.Tee { return a.tee }

// Evidence implements attester.Attester.
func (a *Attester) Evidence(ctx context.Context, reportData []byte) (json.RawMessage, error) {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	resp, err := a.aa.GetEvidence(ctx, &aapb.GetEvidenceRequest{RuntimeData: reportData})
	if err != nil {
		return nil, fmt.Errorf("%w: GetEvidence: %w", ErrAA, err)
	}
	if !json.Valid(resp.Evidence) {
		return nil, fmt.Errorf("%w: GetEvidence answered evidence that is not JSON", ErrAA)
	}
	return resp.Evidence, nil
}

// Close closes the connection.
func (a *Attester) Close() error { return a.conn.Close() }
