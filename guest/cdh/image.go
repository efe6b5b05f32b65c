package cdh

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/cocoon-cc/cocoon/guest/cdh/keyprovider"
	"github.com/cocoon-cc/cocoon/image/pull"
	"github.com/cocoon-cc/cocoon/image/registry"
	"github.com/cocoon-cc/cocoon/image/store"
)

// ErrImageRequest is a PullImage request the CDH cannot act on.
var ErrImageRequest = errors.New("invalid image pull request")

// PullOption changes one PullImage call.
type PullOption func(*pull.Options)

// WithProgress has fn called as the pull advances (see pull.Options).
func WithProgress(fn func(pull.Progress)) PullOption {
	return func(o *pull.Options) { o.Progress = fn }
}

// PullImage pulls imageURL inside the guest into an OCI bundle at
// bundlePath: layers come from the registry (or the content store under
// [image] work_dir), are verified, decrypted with keys from the KBS (after
// attestation) and unpacked. It returns the manifest digest.
func (h *Hub) PullImage(ctx context.Context, imageURL, bundlePath string, opts ...PullOption) (string, error) {
	if imageURL == "" || bundlePath == "" || !filepath.IsAbs(bundlePath) {
		return "", fmt.Errorf("%w: image_url and an absolute bundle_path are required", ErrImageRequest)
	}
	st, err := store.Open(filepath.Join(h.cfg.Image.WorkDir, "content"))
	if err != nil {
		return "", err
	}
	regs, err := h.registries(ctx)
	if err != nil {
		return "", err
	}
	o := pull.Options{Registries: regs, Unwrapper: layerKeys{h}}
	for _, opt := range opts {
		opt(&o)
	}
	img, err := pull.New(st, o).Pull(ctx, imageURL, bundlePath)
	if err != nil {
		return "", err
	}
	return img.Manifest.String(), nil
}

// registries reads [image] registry_configuration_uri: a file:// path or
// a kbs:/// resource. None means each image's own registry.
func (h *Hub) registries(ctx context.Context) (*registry.Config, error) {
	uri := h.cfg.Image.RegistryConfigurationURI
	var b []byte
	var err error
	switch {
	case uri == "":
		return nil, nil
	case strings.HasPrefix(uri, "file://"):
		b, err = os.ReadFile(strings.TrimPrefix(uri, "file://"))
	default:
		b, err = h.GetResource(ctx, uri)
	}
	if err != nil {
		return nil, fmt.Errorf("registry configuration %s: %w", uri, err)
	}
	return registry.Parse(b)
}

// layerKeys unwraps encrypted layers' keys with KBS keys.
type layerKeys struct{ h *Hub }

func (k layerKeys) UnwrapKey(ctx context.Context, packet []byte) ([]byte, error) {
	return keyprovider.UnwrapPacket(ctx, k.h.kbs, packet)
}
