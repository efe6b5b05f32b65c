package aa

import (
	"context"
	"errors"

	"github.com/containerd/ttrpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	aapb "github.com/cocoon-cc/cocoon/protocol/ttrpc/aa"
)

// Service serves an Agent as attestation_agent.AttestationAgentService.
type Service struct {
	agent *Agent
}

var _ aapb.AttestationAgentServiceService = (*Service)(nil)

// Register adds the agent's service to a ttrpc server.
func Register(srv *ttrpc.Server, a *Agent) {
	aapb.RegisterAttestationAgentServiceService(srv, &Service{agent: a})
}

// GetEvidence implements the ttrpc service.
func (s *Service) GetEvidence(ctx context.Context, req *aapb.GetEvidenceRequest) (*aapb.GetEvidenceResponse, error) {
	ev, err := s.agent.Evidence(ctx, req.GetRuntimeData())
	if err != nil {
		return nil, s.fail("GetEvidence", err)
	}
	return &aapb.GetEvidenceResponse{Evidence: ev}, nil
}

// GetAdditionalEvidence implements the ttrpc service: Cocoon attests no
// additional devices, so the evidence is empty, as upstream's without any.
func (s *Service) GetAdditionalEvidence(context.Context, *aapb.GetAdditionalEvidenceRequest) (*aapb.GetEvidenceResponse, error) {
	return &aapb.GetEvidenceResponse{}, nil
}

// GetToken implements the ttrpc service.
func (s *Service) GetToken(ctx context.Context, req *aapb.GetTokenRequest) (*aapb.GetTokenResponse, error) {
	tok, err := s.agent.Token(ctx, req.GetTokenType())
	if err != nil {
		return nil, s.fail("GetToken", err)
	}
	return &aapb.GetTokenResponse{Token: tok}, nil
}

// ExtendRuntimeMeasurement implements the ttrpc service.
func (s *Service) ExtendRuntimeMeasurement(ctx context.Context, req *aapb.ExtendRuntimeMeasurementRequest) (*aapb.ExtendRuntimeMeasurementResponse, error) {
	ev := Event{Domain: req.GetDomain(), Operation: req.GetOperation(), Content: req.GetContent()}
	res, err := s.agent.ExtendRuntimeMeasurement(ctx, ev, req.RegisterIndex)
	if err != nil {
		return nil, s.fail("ExtendRuntimeMeasurement", err)
	}
	return &aapb.ExtendRuntimeMeasurementResponse{Result: res}, nil
}

// BindInitData implements the ttrpc service.
func (s *Service) BindInitData(ctx context.Context, req *aapb.BindInitDataRequest) (*aapb.BindInitDataResponse, error) {
	bound, err := s.agent.BindInitData(ctx, req.GetDigest())
	if err != nil {
		return nil, s.fail("BindInitData", err)
	}
	if !bound {
		s.agent.log.Info("initdata binding unsupported by this TEE", "tee", s.agent.Tee())
	}
	return &aapb.BindInitDataResponse{}, nil
}

// GetTeeType implements the ttrpc service.
func (s *Service) GetTeeType(context.Context, *aapb.GetTeeTypeRequest) (*aapb.GetTeeTypeResponse, error) {
	return &aapb.GetTeeTypeResponse{Tee: string(s.agent.Tee())}, nil
}

// GetAdditionalTees implements the ttrpc service.
func (s *Service) GetAdditionalTees(context.Context, *aapb.GetAdditionalTeesRequest) (*aapb.GetAdditionalTeesResponse, error) {
	return &aapb.GetAdditionalTeesResponse{}, nil
}

// fail logs err and turns it into a gRPC status. Errors never carry
// tokens or keys, so their text is safe to log and to send.
func (s *Service) fail(method string, err error) error {
	code := Code(err)
	s.agent.log.Warn("request failed", "method", method, "code", code.String(), "err", err)
	return status.Error(code, err.Error())
}

// Code is the gRPC status code of an agent error.
func Code(err error) codes.Code {
	switch {
	case errors.Is(err, ErrUnreachable):
		return codes.Unavailable
	case errors.Is(err, ErrRefused):
		return codes.PermissionDenied
	case errors.Is(err, context.DeadlineExceeded):
		return codes.DeadlineExceeded
	case errors.Is(err, context.Canceled):
		return codes.Canceled
	case errors.Is(err, ErrInvalidRequest), errors.Is(err, ErrInvalidEvent), errors.Is(err, ErrTokenType):
		return codes.InvalidArgument
	case errors.Is(err, ErrNotConfigured), errors.Is(err, ErrInitData), errors.Is(err, ErrEventLog):
		return codes.FailedPrecondition
	case errors.Is(err, errors.ErrUnsupported):
		return codes.Unimplemented
	}
	return codes.Internal
}
