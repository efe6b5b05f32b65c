package nodeattestor

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"sync"

	agentv1 "github.com/spiffe/spire-plugin-sdk/proto/spire/plugin/agent/nodeattestor/v1"
	configv1 "github.com/spiffe/spire-plugin-sdk/proto/spire/service/common/config/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/cocoon-cc/cocoon/guest/cdh/attest"
	"github.com/cocoon-cc/cocoon/guest/cdh/config"
	"github.com/cocoon-cc/cocoon/kbs/client"
)

// AgentConfig is the agent plugin's plugin_data.
type AgentConfig struct {
	// KBSURL is the KBS to attest to; KBSCertPath its HTTPS root (PEM).
	KBSURL      string `hcl:"kbs_url"`
	KBSCertPath string `hcl:"kbs_cert_path"`
	// Attester is the evidence source: aa (the attestation agent, the
	// default), sample or tpm; AASocket the attestation agent's socket.
	Attester string `hcl:"attester"`
	AASocket string `hcl:"aa_socket"`
	// InitdataPath is the initdata the TEE was launched with, if any.
	InitdataPath string `hcl:"initdata_path"`
}

// Agent is the agent side: it attests to the KBS and answers the server's
// challenge with its TEE key.
type Agent struct {
	agentv1.UnimplementedNodeAttestorServer
	configv1.UnimplementedConfigServer

	mu  sync.Mutex
	cfg *AgentConfig
}

// Configure takes the plugin_data.
func (a *Agent) Configure(_ context.Context, req *configv1.ConfigureRequest) (*configv1.ConfigureResponse, error) {
	cfg := &AgentConfig{}
	if err := decodeHCL(req.HclConfiguration, cfg); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	if cfg.KBSURL == "" {
		return nil, status.Errorf(codes.InvalidArgument, "%v: kbs_url is required", ErrConfig)
	}
	if cfg.AASocket == "" {
		cfg.AASocket = config.DefaultAASocket
	}
	a.mu.Lock()
	a.cfg = cfg
	a.mu.Unlock()
	return &configv1.ConfigureResponse{}, nil
}

func (a *Agent) config() (*AgentConfig, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.cfg == nil {
		return nil, status.Error(codes.FailedPrecondition, "not configured")
	}
	return a.cfg, nil
}

// AidAttestation sends the EAR token of a fresh handshake, then the
// server's challenge signed with the handshake's TEE key.
func (a *Agent) AidAttestation(stream agentv1.NodeAttestor_AidAttestationServer) error {
	cfg, err := a.config()
	if err != nil {
		return err
	}
	ctx := stream.Context()
	att, closeAttester, err := attest.Open(ctx, cfg.Attester, cfg.AASocket)
	if err != nil {
		return status.Errorf(codes.Internal, "attester: %v", err)
	}
	defer closeAttester()
	var initdata []byte
	if cfg.InitdataPath != "" {
		if initdata, err = os.ReadFile(cfg.InitdataPath); err != nil {
			return status.Errorf(codes.Internal, "initdata: %v", err)
		}
	}
	hc, err := client.HTTPClient(cfg.KBSCertPath)
	if err != nil {
		return status.Error(codes.Internal, err.Error())
	}
	c, err := client.New(cfg.KBSURL, att, client.Options{HTTP: hc, InitData: initdata})
	if err != nil {
		return status.Error(codes.Internal, err.Error())
	}
	token, err := c.Attest(ctx)
	if err != nil {
		return status.Errorf(codes.Unavailable, "attest to the KBS: %v", err)
	}
	p, _ := json.Marshal(payload{Token: token})
	if err := stream.Send(&agentv1.PayloadOrChallengeResponse{Data: &agentv1.PayloadOrChallengeResponse_Payload{Payload: p}}); err != nil {
		return err
	}
	ch, err := stream.Recv()
	if err != nil {
		return err
	}
	jws, err := c.Key().Sign(ch.Challenge)
	if err != nil {
		return status.Error(codes.Internal, fmt.Sprintf("sign the challenge: %v", err))
	}
	return stream.Send(&agentv1.PayloadOrChallengeResponse{Data: &agentv1.PayloadOrChallengeResponse_ChallengeResponse{ChallengeResponse: []byte(jws)}})
}
