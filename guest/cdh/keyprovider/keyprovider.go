// Package keyprovider serves the ocicrypt key provider protocol's unwrap
// operation for encrypted image layers: the layer's annotation names a
// key-encryption key in the KBS (kid) and carries the layer's private
// options (the layer key) wrapped with it, as coco-keyprovider made them.
package keyprovider

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/cocoon-cc/cocoon/guest/cdh/resource"
	"github.com/cocoon-cc/cocoon/guest/cdh/wrap"
	"github.com/cocoon-cc/cocoon/protocol"
)

// OpUnwrap is the only operation a guest serves; wrapping is the owner's
// business (coco-keyprovider).
const OpUnwrap = "keyunwrap"

// maxInput bounds the protocol input.
const maxInput = 1 << 20

var (
	// ErrMalformed: the input or its annotation packet cannot be decoded.
	ErrMalformed = errors.New("malformed key provider input")
	// ErrUnsupported: an operation, version or provider the CDH does not serve.
	ErrUnsupported = errors.New("unsupported key provider request")
)

// Input is ocicrypt's KeyProviderKeyWrapProtocolInput, unwrap side.
type Input struct {
	Op              string       `json:"op"`
	KeyUnwrapParams UnwrapParams `json:"keyunwrapparams"`
}

// UnwrapParams carries the annotation (standard base64 in JSON, as Go's
// []byte and ocicrypt-rs's String both encode it).
type UnwrapParams struct {
	Annotation string `json:"annotation"`
}

// Output is KeyProviderKeyWrapProtocolOutput for unwrap. OptsData is a
// JSON array of numbers, as ocicrypt-rs (image-rs) requires; Go's ocicrypt
// decodes that into its []byte too.
type Output struct {
	KeyUnwrapResults struct {
		OptsData []int `json:"optsdata"`
	} `json:"keyunwrapresults"`
}

// NewOutput wraps optsdata.
func NewOutput(optsdata []byte) *Output {
	var o Output
	o.KeyUnwrapResults.OptsData = make([]int, len(optsdata))
	for i, b := range optsdata {
		o.KeyUnwrapResults.OptsData[i] = int(b)
	}
	return &o
}

// Request is a validated unwrap request.
type Request struct {
	kid         resource.URI
	wrapType    wrap.Type
	iv, wrapped []byte
}

// Parse decodes and validates a protocol input.
func Parse(input []byte) (*Request, error) {
	if len(input) > maxInput {
		return nil, fmt.Errorf("%w: larger than %d bytes", ErrMalformed, maxInput)
	}
	var in Input
	if err := json.Unmarshal(input, &in); err != nil {
		return nil, fmt.Errorf("%w: not KeyProviderKeyWrapProtocolInput JSON", ErrMalformed)
	}
	if in.Op != OpUnwrap {
		return nil, fmt.Errorf("%w: op %q", ErrUnsupported, in.Op)
	}
	raw, err := base64.StdEncoding.DecodeString(in.KeyUnwrapParams.Annotation)
	if err != nil || len(raw) == 0 {
		return nil, fmt.Errorf("%w: keyunwrapparams.annotation is not standard base64", ErrMalformed)
	}
	return parsePacket(raw)
}

// parsePacket validates an annotation packet (the JSON, not its base64).
func parsePacket(raw []byte) (*Request, error) {
	p := protocol.KeyPacket{Version: "0.1.0", Provider: "kbs"}
	if err := json.Unmarshal(raw, &p); err != nil {
		return nil, fmt.Errorf("%w: annotation packet is not JSON", ErrMalformed)
	}
	return validate(&p)
}

func validate(p *protocol.KeyPacket) (*Request, error) {
	if p.Version != "0.1.0" || p.Provider != "kbs" {
		return nil, fmt.Errorf("%w: annotation packet version %q provider %q", ErrUnsupported, p.Version, p.Provider)
	}
	kid, err := resource.Parse(p.Kid)
	if err != nil {
		return nil, fmt.Errorf("%w: kid: %w", ErrMalformed, err)
	}
	t, err := wrap.ParseType(p.WrapType)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	iv, errIV := base64.StdEncoding.DecodeString(p.IV)
	wrapped, errW := base64.StdEncoding.DecodeString(p.WrappedData)
	if errIV != nil || errW != nil {
		return nil, fmt.Errorf("%w: iv and wrapped_data must be standard base64", ErrMalformed)
	}
	return &Request{kid: kid, wrapType: t, iv: iv, wrapped: wrapped}, nil
}

// Getter fetches KBS resources (after attestation).
type Getter interface {
	GetResource(ctx context.Context, u resource.URI) ([]byte, error)
}

// UnwrapKey answers an unwrap request: the JSON of Output.
func UnwrapKey(ctx context.Context, kbs Getter, input []byte) ([]byte, error) {
	p, err := Parse(input)
	if err != nil {
		return nil, err
	}
	opts, err := p.unwrap(ctx, kbs)
	if err != nil {
		return nil, err
	}
	defer clear(opts)
	return json.Marshal(NewOutput(opts))
}

// UnwrapPacket returns the layer's private options an annotation packet
// wraps: the guest image pipeline's path, without the protocol envelope.
func UnwrapPacket(ctx context.Context, kbs Getter, packet []byte) ([]byte, error) {
	p, err := parsePacket(packet)
	if err != nil {
		return nil, err
	}
	return p.unwrap(ctx, kbs)
}

// unwrap fetches the key-encryption key after attestation and opens the
// wrapped options with it.
func (p *Request) unwrap(ctx context.Context, kbs Getter) ([]byte, error) {
	kek, err := kbs.GetResource(ctx, p.kid)
	if err != nil {
		return nil, fmt.Errorf("get key-encryption key %s: %w", p.kid, err)
	}
	defer clear(kek)
	opts, err := wrap.Decrypt(p.wrapType, kek, p.iv, p.wrapped)
	if err != nil {
		return nil, fmt.Errorf("unwrap with %s: %w", p.kid, err)
	}
	return opts, nil
}
