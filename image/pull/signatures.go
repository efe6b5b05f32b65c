package pull

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/cocoon-cc/cocoon/image/signature"
)

// Limits on a signature attachment: the host serves it, so it is bounded.
const (
	maxSignatures       = 32
	maxSignaturePayload = 64 << 10
	cosignSignatureKey  = "dev.cosignproject.cosign/signature"
)

// sigSource reads an image's sigstore signatures from its registry (the
// sha256-<hex>.sig attachment cosign and skopeo write) and keys from Keys.
type sigSource struct {
	p     *Puller
	s     *source
	d     digest.Digest
	named name.Reference
}

func (ss *sigSource) Signatures(ctx context.Context) ([]signature.Signature, error) {
	tag := ss.s.ref.Context().Tag(strings.Replace(ss.d.String(), ":", "-", 1) + ".sig")
	opts := ss.p.remoteOptions(ctx, ss.s)
	desc, err := remote.Get(tag, opts...)
	if err != nil {
		return nil, nil // unsigned: the policy decides
	}
	var m ocispec.Manifest
	if err := json.Unmarshal(desc.Manifest, &m); err != nil {
		return nil, fmt.Errorf("%w: signature manifest: %w", ErrManifest, err)
	}
	if len(m.Layers) > maxSignatures {
		return nil, fmt.Errorf("%w: %d signatures, limit %d", ErrManifest, len(m.Layers), maxSignatures)
	}
	var sigs []signature.Signature
	for _, l := range m.Layers {
		sig, ok := l.Annotations[cosignSignatureKey]
		if !ok || l.Size > maxSignaturePayload {
			continue
		}
		payload, err := ss.blob(ctx, l.Digest)
		if err != nil {
			return nil, err
		}
		sigs = append(sigs, signature.Signature{Payload: payload, Signature: sig})
	}
	return sigs, nil
}

// blob reads a small blob and checks its digest.
func (ss *sigSource) blob(ctx context.Context, d digest.Digest) ([]byte, error) {
	r, err := ss.s.openBlob(ctx, d, 2, 0)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	b, err := io.ReadAll(io.LimitReader(r, maxSignaturePayload+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxSignaturePayload || digest.FromBytes(b) != d {
		return nil, fmt.Errorf("%w: signature payload %s does not match its digest", ErrManifest, d)
	}
	return b, nil
}

// SimpleSignatures reads GPG signatures from the lookaside server:
// signature-1, signature-2, ... until one is missing.
func (ss *sigSource) SimpleSignatures(ctx context.Context) ([][]byte, error) {
	if ss.p.o.Lookaside == nil {
		return nil, nil
	}
	client := &http.Client{Transport: ss.p.o.Transport}
	var sigs [][]byte
	for _, u := range ss.p.o.Lookaside.URLs(ss.named, ss.d, maxSignatures) {
		b, found, err := getSmall(ctx, client, u)
		if err != nil {
			return nil, err
		}
		if !found {
			break
		}
		sigs = append(sigs, b)
	}
	return sigs, nil
}

// getSmall fetches a signature; a 404 is the end of the list.
func getSmall(ctx context.Context, c *http.Client, url string) ([]byte, bool, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, false, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, false, fmt.Errorf("%w: signature %s: %w", ErrRegistry, url, err)
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusNotFound:
		return nil, false, nil
	default:
		return nil, false, fmt.Errorf("%w: signature %s: %s", ErrRegistry, url, resp.Status)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxSignaturePayload+1))
	if err != nil || len(b) > maxSignaturePayload {
		return nil, false, fmt.Errorf("%w: signature %s: %d bytes, %v", ErrRegistry, url, len(b), err)
	}
	return b, true, nil
}

func (ss *sigSource) Key(ctx context.Context, uri string) ([]byte, error) {
	if ss.p.o.Keys == nil {
		return nil, fmt.Errorf("no key source for %s", uri)
	}
	return ss.p.o.Keys(ctx, uri)
}
