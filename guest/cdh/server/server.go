// Package server exposes a cdh.Hub as guest-components' ttrpc services
// (api.GetResourceService, api.SealedSecretService,
// api.SecureMountService, api.ImagePullService and
// keyprovider.KeyProviderService) and maps its typed errors to status
// codes a kata agent can act on.
package server

import (
	"context"
	"errors"
	"log/slog"

	"github.com/containerd/ttrpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/cocoon-cc/cocoon/guest/cdh"
	"github.com/cocoon-cc/cocoon/guest/cdh/config"
	"github.com/cocoon-cc/cocoon/guest/cdh/kbc"
	"github.com/cocoon-cc/cocoon/guest/cdh/keyprovider"
	"github.com/cocoon-cc/cocoon/guest/cdh/resource"
	"github.com/cocoon-cc/cocoon/guest/cdh/sealed"
	"github.com/cocoon-cc/cocoon/guest/cdh/securemount"
	"github.com/cocoon-cc/cocoon/guest/cdh/wrap"
	"github.com/cocoon-cc/cocoon/image/decrypt"
	"github.com/cocoon-cc/cocoon/image/pull"
	"github.com/cocoon-cc/cocoon/image/signature"
	"github.com/cocoon-cc/cocoon/image/unpack"
	cdhpb "github.com/cocoon-cc/cocoon/protocol/ttrpc/cdh"
	kppb "github.com/cocoon-cc/cocoon/protocol/ttrpc/keyprovider"
)

// Register serves h on s.
func Register(s *ttrpc.Server, h *cdh.Hub, log *slog.Logger) {
	svc := &service{hub: h, log: log}
	cdhpb.RegisterGetResourceServiceService(s, svc)
	cdhpb.RegisterSealedSecretServiceService(s, svc)
	cdhpb.RegisterSecureMountServiceService(s, svc)
	cdhpb.RegisterImagePullServiceService(s, svc)
	kppb.RegisterKeyProviderServiceService(s, svc)
}

type service struct {
	hub *cdh.Hub
	log *slog.Logger
}

func (s *service) GetResource(ctx context.Context, r *cdhpb.GetResourceRequest) (*cdhpb.GetResourceResponse, error) {
	data, err := s.hub.GetResource(ctx, r.ResourcePath)
	if err != nil {
		return nil, s.fail("GetResource", err)
	}
	return &cdhpb.GetResourceResponse{Resource: data}, nil
}

func (s *service) UnsealSecret(ctx context.Context, r *cdhpb.UnsealSecretInput) (*cdhpb.UnsealSecretOutput, error) {
	data, err := s.hub.UnsealSecret(ctx, r.Secret)
	if err != nil {
		return nil, s.fail("UnsealSecret", err)
	}
	return &cdhpb.UnsealSecretOutput{Plaintext: data}, nil
}

func (s *service) SecureMount(ctx context.Context, r *cdhpb.SecureMountRequest) (*cdhpb.SecureMountResponse, error) {
	err := s.hub.SecureMount(ctx, &securemount.Request{VolumeType: r.VolumeType, Options: r.Options,
		Flags: r.Flags, MountPoint: r.MountPoint})
	if err != nil {
		return nil, s.fail("SecureMount", err)
	}
	return &cdhpb.SecureMountResponse{}, nil
}

func (s *service) PullImage(ctx context.Context, r *cdhpb.ImagePullRequest) (*cdhpb.ImagePullResponse, error) {
	digest, err := s.hub.PullImage(ctx, r.ImageUrl, r.BundlePath, cdh.WithLog(s.log))
	if err != nil {
		return nil, s.fail("PullImage", err)
	}
	return &cdhpb.ImagePullResponse{ManifestDigest: digest}, nil
}

func (s *service) UnWrapKey(ctx context.Context, r *kppb.KeyProviderKeyWrapProtocolInput) (*kppb.KeyProviderKeyWrapProtocolOutput, error) {
	out, err := s.hub.UnwrapKey(ctx, r.KeyProviderKeyWrapProtocolInput)
	if err != nil {
		return nil, s.fail("UnWrapKey", err)
	}
	return &kppb.KeyProviderKeyWrapProtocolOutput{KeyProviderKeyWrapProtocolOutput: out}, nil
}

// WrapKey is the owner's side (coco-keyprovider); a guest never wraps.
func (s *service) WrapKey(context.Context, *kppb.KeyProviderKeyWrapProtocolInput) (*kppb.KeyProviderKeyWrapProtocolOutput, error) {
	return nil, status.Error(codes.Unimplemented, "WrapKey is served by coco-keyprovider, not the CDH")
}

// fail logs err (errors never carry secrets) and returns its status.
func (s *service) fail(method string, err error) error {
	code := Code(err)
	s.log.Warn("request failed", "method", method, "code", code.String(), "err", err)
	return status.Error(code, err.Error())
}

// Code maps the CDH's typed errors to status codes.
func Code(err error) codes.Code {
	switch {
	case errors.Is(err, cdh.ErrImageRequest):
		return codes.InvalidArgument
	case errors.Is(err, pull.ErrUnauthorized):
		return codes.PermissionDenied
	case errors.Is(err, pull.ErrRegistry):
		return codes.Unavailable
	case errors.Is(err, unpack.ErrTooLarge):
		return codes.ResourceExhausted
	case errors.Is(err, decrypt.ErrUnwrap), errors.Is(err, signature.ErrRejected),
		errors.Is(err, signature.ErrSignatureRequired), errors.Is(err, signature.ErrSignatureInvalid):
		return codes.PermissionDenied
	case errors.Is(err, signature.ErrInvalidPolicy):
		return codes.InvalidArgument
	case errors.Is(err, signature.ErrUnsupported):
		return codes.Unimplemented
	case errors.Is(err, context.DeadlineExceeded):
		return codes.DeadlineExceeded
	case errors.Is(err, kbc.ErrUnavailable):
		return codes.Unavailable
	case errors.Is(err, kbc.ErrDenied), errors.Is(err, sealed.ErrBadSignature), errors.Is(err, sealed.ErrUnsigned),
		errors.Is(err, wrap.ErrDecrypt):
		return codes.PermissionDenied
	case errors.Is(err, kbc.ErrNotFound):
		return codes.NotFound
	case errors.Is(err, resource.ErrInvalidURI), errors.Is(err, sealed.ErrMalformed), errors.Is(err, sealed.ErrBadKey),
		errors.Is(err, sealed.ErrVersion), errors.Is(err, sealed.ErrUnknownType), errors.Is(err, keyprovider.ErrMalformed),
		errors.Is(err, securemount.ErrInvalid), errors.Is(err, wrap.ErrUnknownType), errors.Is(err, wrap.ErrKeySize),
		errors.Is(err, wrap.ErrIVSize), errors.Is(err, config.ErrInvalid):
		return codes.InvalidArgument
	case errors.Is(err, sealed.ErrUnsupportedProvider), errors.Is(err, keyprovider.ErrUnsupported),
		errors.Is(err, securemount.ErrUnsupported):
		return codes.Unimplemented
	}
	return codes.Internal
}
