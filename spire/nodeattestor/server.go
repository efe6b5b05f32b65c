package nodeattestor

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"sync"
	"time"

	gojose "github.com/go-jose/go-jose/v4"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	serverv1 "github.com/spiffe/spire-plugin-sdk/proto/spire/plugin/server/nodeattestor/v1"
	configv1 "github.com/spiffe/spire-plugin-sdk/proto/spire/service/common/config/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/cocoon-cc/cocoon/attestation/ear"
	"github.com/cocoon-cc/cocoon/jose"
	"github.com/cocoon-cc/cocoon/kbs/client"
	"github.com/cocoon-cc/cocoon/kbs/svid"
	"github.com/cocoon-cc/cocoon/protocol"
)

// ServerConfig is the server plugin's plugin_data.
type ServerConfig struct {
	// KBSURL is the KBS whose token keys (/.well-known/jwks.json) are
	// trusted; KBSCertPath its HTTPS root (PEM). JWKSPath names a file
	// with the keys instead.
	KBSURL      string `hcl:"kbs_url"`
	KBSCertPath string `hcl:"kbs_cert_path"`
	JWKSPath    string `hcl:"jwks_path"`
	// AllowNonAffirming accepts appraisals that are not affirming, and
	// AllowSample the sample TEE, which proves nothing: development only.
	AllowNonAffirming bool `hcl:"allow_non_affirming"`
	AllowSample       bool `hcl:"allow_sample"`
}

// Server is the server side: it verifies the agent's EAR token and its
// possession of the token's TEE key.
type Server struct {
	serverv1.UnimplementedNodeAttestorServer
	configv1.UnimplementedConfigServer

	mu       sync.Mutex
	cfg      *ServerConfig
	td       spiffeid.TrustDomain
	verifier *ear.Verifier // nil until the keys are fetched
}

// Configure takes the plugin_data and the server's trust domain.
func (s *Server) Configure(_ context.Context, req *configv1.ConfigureRequest) (*configv1.ConfigureResponse, error) {
	cfg := &ServerConfig{}
	if err := decodeHCL(req.HclConfiguration, cfg); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	if (cfg.KBSURL == "") == (cfg.JWKSPath == "") {
		return nil, status.Errorf(codes.InvalidArgument, "%v: give kbs_url or jwks_path", ErrConfig)
	}
	td, err := spiffeid.TrustDomainFromString(req.GetCoreConfiguration().GetTrustDomain())
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "%v: trust domain: %v", ErrConfig, err)
	}
	s.mu.Lock()
	s.cfg, s.td, s.verifier = cfg, td, nil
	s.mu.Unlock()
	return &configv1.ConfigureResponse{}, nil
}

// tokenVerifier returns the verifier of the KBS's tokens, fetching its
// keys on first use (the KBS may start after the SPIRE server).
func (s *Server) tokenVerifier(ctx context.Context) (*ear.Verifier, *ServerConfig, spiffeid.TrustDomain, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cfg == nil {
		return nil, nil, spiffeid.TrustDomain{}, status.Error(codes.FailedPrecondition, "not configured")
	}
	if s.verifier == nil {
		keys, err := loadKeys(ctx, s.cfg)
		if err != nil {
			return nil, nil, spiffeid.TrustDomain{}, status.Errorf(codes.Unavailable, "the KBS's token keys: %v", err)
		}
		s.verifier = ear.NewVerifier(ear.VerifierOptions{Keys: keys, Leeway: 30 * time.Second})
	}
	return s.verifier, s.cfg, s.td, nil
}

func loadKeys(ctx context.Context, cfg *ServerConfig) ([]gojose.JSONWebKey, error) {
	var b []byte
	var err error
	if cfg.JWKSPath != "" {
		b, err = os.ReadFile(cfg.JWKSPath)
	} else {
		var hc *http.Client
		if hc, err = client.HTTPClient(cfg.KBSCertPath); err == nil {
			err = client.Do(ctx, hc, http.MethodGet, cfg.KBSURL+"/.well-known/jwks.json", "", nil, &b)
		}
	}
	if err != nil {
		return nil, err
	}
	var set gojose.JSONWebKeySet
	if err := json.Unmarshal(b, &set); err != nil {
		return nil, err
	}
	return set.Keys, nil
}

// Attest runs the exchange: token, challenge, signed challenge.
func (s *Server) Attest(stream serverv1.NodeAttestor_AttestServer) error {
	v, cfg, td, err := s.tokenVerifier(stream.Context())
	if err != nil {
		return err
	}
	req, err := stream.Recv()
	if err != nil {
		return err
	}
	claims, pub, err := checkPayload(v, cfg, req.GetPayload())
	if err != nil {
		return status.Error(codes.PermissionDenied, err.Error())
	}
	challenge := make([]byte, challengeSize)
	rand.Read(challenge)
	if err := stream.Send(&serverv1.AttestResponse{Response: &serverv1.AttestResponse_Challenge{Challenge: challenge}}); err != nil {
		return err
	}
	if req, err = stream.Recv(); err != nil {
		return err
	}
	signed, err := jose.VerifySigned(pub, string(req.GetChallengeResponse()))
	if err != nil || !bytes.Equal(signed, challenge) {
		return status.Errorf(codes.PermissionDenied, "the challenge is not signed by the token's TEE key: %v", err)
	}
	return stream.Send(&serverv1.AttestResponse{Response: &serverv1.AttestResponse_AgentAttributes{AgentAttributes: &serverv1.AgentAttributes{
		SpiffeId:       agentID(td, pub).String(),
		SelectorValues: selectors(td, claims),
		CanReattest:    true,
	}}})
}

// checkPayload verifies the token and its appraisal and returns its
// claims and TEE key.
func checkPayload(v *ear.Verifier, cfg *ServerConfig, b []byte) (*ear.Claims, protocol.TeePubKey, error) {
	var p payload
	if len(b) > maxPayload || json.Unmarshal(b, &p) != nil || p.Token == "" {
		return nil, protocol.TeePubKey{}, fmt.Errorf("the payload is not a cocoon attestation")
	}
	claims, _, err := v.Verify(p.Token)
	if err != nil {
		return nil, protocol.TeePubKey{}, fmt.Errorf("token: %w", err)
	}
	cpu, ok := claims.Submods["cpu0"]
	switch {
	case !ok:
		return nil, protocol.TeePubKey{}, fmt.Errorf("token has no cpu0 appraisal")
	case cpu.Status != ear.StatusAffirming && !cfg.AllowNonAffirming:
		return nil, protocol.TeePubKey{}, fmt.Errorf("the appraisal is %s, not affirming", cpu.Status)
	case cpu.TEE() == string(protocol.TeeSample) && !cfg.AllowSample:
		return nil, protocol.TeePubKey{}, fmt.Errorf("the sample TEE proves nothing (allow_sample = false)")
	}
	var rd struct {
		TeePubKey *protocol.TeePubKey `json:"tee-pubkey"`
	}
	if cpu.RuntimeData(&rd) != nil || rd.TeePubKey == nil {
		return nil, protocol.TeePubKey{}, fmt.Errorf("token carries no tee-pubkey")
	}
	return claims, *rd.TeePubKey, nil
}

// agentID names the agent by its TEE key, which only that TEE holds.
func agentID(td spiffeid.TrustDomain, pub protocol.TeePubKey) spiffeid.ID {
	canon, _ := protocol.CanonicalJSON(pub.Members())
	sum := sha256.Sum256(canon)
	return spiffeid.RequireFromPath(td, "/spire/agent/"+PluginName+"/"+hex.EncodeToString(sum[:16]))
}

// selectors are what registration entries can name: the TEE, the
// appraisal and the SPIFFE ID the node's initdata names.
func selectors(td spiffeid.TrustDomain, c *ear.Claims) []string {
	cpu := c.Submods["cpu0"]
	out := []string{"tee:" + cpu.TEE(), "status:" + string(cpu.Status)}
	if id, err := svid.IDFromClaims(td, c); err == nil {
		out = append(out, "spiffe_id:"+id.String())
	}
	var digest string
	if raw, ok := cpu.AnnotatedEvidence["init_data"]; ok && json.Unmarshal(raw, &digest) == nil {
		out = append(out, "init_data:"+digest)
	}
	return out
}
