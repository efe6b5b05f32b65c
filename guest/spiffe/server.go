package spiffe

import (
	"context"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"

	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"
)

// Where the Workload API is, in the guest and in every container of the
// pod, and the variable go-spiffe clients read it from.
const (
	ContainerSocketDir = "/run/spiffe/workload"
	SocketName         = "socket"
	EndpointEnv        = "SPIFFE_ENDPOINT_SOCKET"
)

// securityHeader is the metadata every Workload API call must carry, so
// that a browser or proxy tricked into calling the socket is refused.
const securityHeader = "workload.spiffe.io"

// Server is the SPIFFE Workload API over a Source. Every caller is the
// pod: the socket is only mounted into the pod's containers, and the pod
// has one identity.
type Server struct {
	workload.UnimplementedSpiffeWorkloadAPIServer
	src *Source
}

// NewServer serves src.
func NewServer(src *Source) *Server { return &Server{src: src} }

// Serve listens on the unix socket at path (made reachable by any user of
// the containers) and serves until ctx ends.
func (s *Server) Serve(ctx context.Context, path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	os.Remove(path)
	l, err := net.Listen("unix", path)
	if err != nil {
		return err
	}
	if err := os.Chmod(path, 0o777); err != nil {
		l.Close()
		return err
	}
	g := grpc.NewServer()
	workload.RegisterSpiffeWorkloadAPIServer(g, s)
	go func() {
		<-ctx.Done()
		g.Stop()
	}()
	if err := g.Serve(l); err != nil && ctx.Err() == nil {
		return err
	}
	return nil
}

func checkHeader(ctx context.Context) error {
	md, _ := metadata.FromIncomingContext(ctx)
	if v := md.Get(securityHeader); len(v) != 1 || v[0] != "true" {
		return status.Error(codes.InvalidArgument, "security header missing from request")
	}
	return nil
}

// ready waits for the first SVID.
func (s *Server) ready(ctx context.Context) error {
	if err := checkHeader(ctx); err != nil {
		return err
	}
	select {
	case <-s.src.Ready():
		return nil
	case <-ctx.Done():
		return status.FromContextError(ctx.Err()).Err()
	}
}

// stream sends msg() now and after every change until the client leaves.
func stream[T any](ctx context.Context, s *Server, send func(*T) error, msg func() (*T, error)) error {
	if err := s.ready(ctx); err != nil {
		return err
	}
	for {
		updated := s.src.Updated()
		m, err := msg()
		if err != nil {
			return status.Error(codes.Unavailable, err.Error())
		}
		if err := send(m); err != nil {
			return err
		}
		select {
		case <-updated:
		case <-ctx.Done():
			return nil
		}
	}
}

// FetchX509SVID streams the pod's X.509-SVID and bundle.
func (s *Server) FetchX509SVID(_ *workload.X509SVIDRequest, st grpc.ServerStreamingServer[workload.X509SVIDResponse]) error {
	return stream(st.Context(), s, st.Send, func() (*workload.X509SVIDResponse, error) {
		svid, err := s.src.GetX509SVID()
		if err != nil {
			return nil, err
		}
		certs, key, err := svid.MarshalRaw()
		if err != nil {
			return nil, err
		}
		b, err := s.src.Bundle()
		if err != nil {
			return nil, err
		}
		return &workload.X509SVIDResponse{Svids: []*workload.X509SVID{{
			SpiffeId: svid.ID.String(), X509Svid: certs, X509SvidKey: key, Bundle: rawCerts(b.X509Authorities()),
		}}}, nil
	})
}

// FetchX509Bundles streams the X.509 bundle.
func (s *Server) FetchX509Bundles(_ *workload.X509BundlesRequest, st grpc.ServerStreamingServer[workload.X509BundlesResponse]) error {
	return stream(st.Context(), s, st.Send, func() (*workload.X509BundlesResponse, error) {
		b, err := s.src.Bundle()
		if err != nil {
			return nil, err
		}
		return &workload.X509BundlesResponse{Bundles: map[string][]byte{b.TrustDomain().IDString(): rawCerts(b.X509Authorities())}}, nil
	})
}

// FetchJWTBundles streams the JWT bundle (JWKS).
func (s *Server) FetchJWTBundles(_ *workload.JWTBundlesRequest, st grpc.ServerStreamingServer[workload.JWTBundlesResponse]) error {
	return stream(st.Context(), s, st.Send, func() (*workload.JWTBundlesResponse, error) {
		b, err := s.src.Bundle()
		if err != nil {
			return nil, err
		}
		jwks, err := b.JWTBundle().Marshal()
		if err != nil {
			return nil, err
		}
		return &workload.JWTBundlesResponse{Bundles: map[string][]byte{b.TrustDomain().IDString(): jwks}}, nil
	})
}

// FetchJWTSVID returns a JWT-SVID of the pod for the audience.
func (s *Server) FetchJWTSVID(ctx context.Context, req *workload.JWTSVIDRequest) (*workload.JWTSVIDResponse, error) {
	if err := s.ready(ctx); err != nil {
		return nil, err
	}
	if len(req.Audience) == 0 {
		return nil, status.Error(codes.InvalidArgument, "audience must be specified")
	}
	own, err := s.src.GetX509SVID()
	if err != nil {
		return nil, status.Error(codes.Unavailable, err.Error())
	}
	if req.SpiffeId != "" && req.SpiffeId != own.ID.String() {
		return nil, status.Errorf(codes.PermissionDenied, "the pod has no identity %s", req.SpiffeId)
	}
	svid, err := s.src.FetchJWTSVID(ctx, req.Audience)
	if err != nil {
		return nil, status.Error(codes.Unavailable, err.Error())
	}
	return &workload.JWTSVIDResponse{Svids: []*workload.JWTSVID{{SpiffeId: svid.ID.String(), Svid: svid.Marshal()}}}, nil
}

// ValidateJWTSVID checks a JWT-SVID against the bundle and the audience.
func (s *Server) ValidateJWTSVID(ctx context.Context, req *workload.ValidateJWTSVIDRequest) (*workload.ValidateJWTSVIDResponse, error) {
	if err := s.ready(ctx); err != nil {
		return nil, err
	}
	if req.Audience == "" || req.Svid == "" {
		return nil, status.Error(codes.InvalidArgument, "audience and svid must be specified")
	}
	svid, err := jwtsvid.ParseAndValidate(req.Svid, s.src, []string{req.Audience})
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	claims, err := structpb.NewStruct(svid.Claims)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, fmt.Sprintf("claims: %v", err))
	}
	return &workload.ValidateJWTSVIDResponse{SpiffeId: svid.ID.String(), Claims: claims}, nil
}

func rawCerts(certs []*x509.Certificate) []byte {
	var out [][]byte
	for _, c := range certs {
		out = append(out, c.Raw)
	}
	return slices.Concat(out...)
}
