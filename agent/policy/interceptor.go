package policy

import (
	"context"
	"fmt"
	"strings"

	"github.com/containerd/ttrpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	_ "github.com/cocoon-cc/cocoon/protocol/ttrpc/agent" // registers the agent's services and messages
)

// UnaryInterceptor checks every ttrpc request before its handler runs and
// answers PermissionDenied, without running the handler, when the policy
// refuses it. Methods whose request type is not registered are refused too.
// A refused ReadStreamRequest is Kata's exception: its handler runs with
// the refusal in its context (Denied) and answers success with the data
// withheld, as Kata's agent answers with the data cleared.
func (e *Engine) UnaryInterceptor() ttrpc.UnaryServerInterceptor {
	return func(ctx context.Context, unmarshal ttrpc.Unmarshaler, info *ttrpc.UnaryServerInfo, method ttrpc.Method) (any, error) {
		req, err := requestFor(info.FullMethod)
		if err != nil {
			return nil, status.Error(codes.PermissionDenied, err.Error())
		}
		if err := unmarshal(req); err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "decode %s: %v", info.FullMethod, err)
		}
		name := info.FullMethod[strings.LastIndexByte(info.FullMethod, '/')+1:]
		if err := e.Check(ctx, name, req); err != nil {
			if req.ProtoReflect().Descriptor().Name() != withheldRequest {
				return nil, status.Error(codes.PermissionDenied, err.Error())
			}
			ctx = context.WithValue(ctx, deniedKey{}, err)
		}
		// The handler gets the very request that was checked.
		return method(ctx, func(v any) error {
			m, ok := v.(proto.Message)
			if !ok || m.ProtoReflect().Descriptor() != req.ProtoReflect().Descriptor() {
				return fmt.Errorf("%s: handler expects %T", info.FullMethod, v)
			}
			proto.Merge(m, req)
			return nil
		})
	}
}

// withheldRequest is the request whose refusal withholds the answer's data
// rather than failing the call.
const withheldRequest = "ReadStreamRequest"

type deniedKey struct{}

// Denied is the policy's refusal of the request a handler serves, for
// requests whose refusal reaches their handler (ReadStreamRequest); nil
// when the policy allowed it.
func (e *Engine) Denied(ctx context.Context) error {
	err, _ := ctx.Value(deniedKey{}).(error)
	return err
}

// requestFor makes an empty request message for "/pkg.Service/Method".
func requestFor(fullMethod string) (proto.Message, error) {
	svc, name, ok := strings.Cut(strings.TrimPrefix(fullMethod, "/"), "/")
	if !ok {
		return nil, fmt.Errorf("malformed method %q %w", fullMethod, ErrDenied)
	}
	d, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(svc))
	sd, ok := d.(protoreflect.ServiceDescriptor)
	if err != nil || !ok {
		return nil, fmt.Errorf("unknown service %q %w", svc, ErrDenied)
	}
	md := sd.Methods().ByName(protoreflect.Name(name))
	if md == nil {
		return nil, fmt.Errorf("unknown method %q %w", fullMethod, ErrDenied)
	}
	mt, err := protoregistry.GlobalTypes.FindMessageByName(md.Input().FullName())
	if err != nil {
		return nil, fmt.Errorf("%s: %v %w", fullMethod, err, ErrDenied)
	}
	return mt.New().Interface(), nil
}
