// Command coco-keyprovider is the ocicrypt key provider (gRPC) image owners
// encrypt with: skopeo copy --encryption-key
// provider:attestation-agent:keyid=kbs:///default/key/<id>[::keypath=F][::algorithm=A256GCM]
// with OCICRYPT_KEYPROVIDER_CONFIG naming this server. Each layer key is
// wrapped with a key-encryption key that is registered in the KBS.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/cocoon-cc/cocoon/image/keyprovider"
	"github.com/cocoon-cc/cocoon/kbs/client"
	"github.com/cocoon-cc/cocoon/protocol"
	pb "github.com/cocoon-cc/cocoon/protocol/grpc/keyprovider"
)

func main() {
	socket := flag.String("socket", "127.0.0.1:50000", "gRPC listen address")
	kbsURL := flag.String("kbs", "", "KBS URL to register key-encryption keys in (none: do not register)")
	keyFile := flag.String("auth-private-key", "", "KBS admin private key (PEM: Ed25519, ECDSA P-256 or P-384)")
	certFile := flag.String("kbs-cert", "", "CA certificate of an HTTPS KBS")
	claims := client.TokenClaims{}
	flag.StringVar(&claims.Role, "role", protocol.AdminRole, "role claim of the admin tokens")
	flag.StringVar(&claims.Issuer, "issuer", "", "iss claim of the admin tokens (the KBS identity provider's issuer)")
	flag.StringVar(&claims.Audience, "audience", "", "aud claim of the admin tokens (the KBS identity provider's audience)")
	flag.Parse()
	if err := run(*socket, *kbsURL, *keyFile, *certFile, claims); err != nil {
		fmt.Fprintln(os.Stderr, "coco-keyprovider:", err)
		os.Exit(1)
	}
}

func run(socket, kbsURL, keyFile, certFile string, claims client.TokenClaims) error {
	var reg keyprovider.Registrar
	if kbsURL != "" {
		if keyFile == "" {
			return errors.New("--kbs needs --auth-private-key")
		}
		key, err := client.LoadSigningKey(keyFile)
		if err != nil {
			return err
		}
		hc, err := client.HTTPClient(certFile)
		if err != nil {
			return err
		}
		reg = client.NewAdminSigning(kbsURL, hc, key, claims)
	} else {
		slog.Warn("no --kbs: key-encryption keys are not registered anywhere")
	}
	l, err := net.Listen("tcp", socket)
	if err != nil {
		return err
	}
	s := grpc.NewServer()
	pb.RegisterKeyProviderServiceServer(s, &server{w: keyprovider.NewWrapper(reg)})
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() { <-ctx.Done(); s.GracefulStop() }()
	slog.Info("coco-keyprovider listening", "addr", l.Addr().String(), "kbs", kbsURL)
	return s.Serve(l)
}

type server struct {
	pb.UnimplementedKeyProviderServiceServer
	w *keyprovider.Wrapper
}

// WrapKey wraps; unwrapping is the guest's business (the data hub), as
// upstream's coco_keyprovider.
func (s *server) WrapKey(ctx context.Context, in *pb.KeyProviderKeyWrapProtocolInput) (*pb.KeyProviderKeyWrapProtocolOutput, error) {
	out, err := s.w.WrapKey(ctx, in.GetKeyProviderKeyWrapProtocolInput())
	switch {
	case errors.Is(err, keyprovider.ErrInput):
		return nil, status.Error(codes.InvalidArgument, err.Error())
	case err != nil:
		slog.Error("wrap key", "err", err)
		return nil, status.Error(codes.Internal, err.Error())
	}
	return &pb.KeyProviderKeyWrapProtocolOutput{KeyProviderKeyWrapProtocolOutput: out}, nil
}
