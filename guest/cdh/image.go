package cdh

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/cocoon-cc/cocoon/guest/cdh/keyprovider"
	"github.com/cocoon-cc/cocoon/image/pull"
	"github.com/cocoon-cc/cocoon/image/registry"
	"github.com/cocoon-cc/cocoon/image/signature"
	"github.com/cocoon-cc/cocoon/image/store"
	"github.com/google/go-containerregistry/pkg/authn"
)

// ErrImageRequest is a PullImage request the CDH cannot act on.
var ErrImageRequest = errors.New("invalid image pull request")

// PullOption changes one PullImage call.
type PullOption func(*pull.Options)

// WithProgress has fn called as the pull advances (see pull.Options).
func WithProgress(fn func(pull.Progress)) PullOption {
	return func(o *pull.Options) { o.Progress = fn }
}

// WithLog has the pull report to log (an image accepted without a
// signature policy).
func WithLog(log *slog.Logger) PullOption {
	return func(o *pull.Options) { o.Log = log }
}

// PullImage pulls imageURL inside the guest into an OCI bundle at
// bundlePath whose rootfs is an overlay mount of the image's layers: the
// layers the store under [image] work_dir lacks come from the registry,
// verified, decrypted with keys from the KBS (after attestation) and
// extracted. It returns the manifest digest.
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
	pol, err := h.signaturePolicy(ctx)
	if err != nil {
		return "", err
	}
	creds, err := h.credentials(ctx)
	if err != nil {
		return "", err
	}
	lookaside, err := h.lookaside(ctx)
	if err != nil {
		return "", err
	}
	o := pull.Options{Registries: regs, Unwrapper: layerKeys{h}, Policy: pol, Keys: h.GetResource,
		HostLoopback: h.hostLoopback, Keychain: creds, Lookaside: lookaside, MaxBytes: h.cfg.Image.MaxUnpackedSizeMiB << 20}
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
	if uri == "" {
		return nil, nil
	}
	b, err := h.document(ctx, uri)
	if err != nil {
		return nil, fmt.Errorf("registry configuration %s: %w", uri, err)
	}
	return registry.Parse(b)
}

// signaturePolicy reads the image signature policy (policy.json) from
// [image] image_security_policy_uri (a file:// path or a kbs:///
// resource, fetched after attestation) or image_security_policy (the
// document itself). None means images are not checked, as upstream.
func (h *Hub) signaturePolicy(ctx context.Context) (*signature.Policy, error) {
	b := []byte(h.cfg.Image.ImageSecurityPolicy)
	if uri := h.cfg.Image.ImageSecurityPolicyURI; uri != "" {
		var err error
		if b, err = h.document(ctx, uri); err != nil {
			return nil, fmt.Errorf("image security policy %s: %w", uri, err)
		}
	}
	if len(b) == 0 {
		return nil, nil
	}
	return signature.ParsePolicy(b)
}

// credentials reads [image] authenticated_registry_credentials_uri, an
// auth.json (file:// or kbs:///, released after attestation); none means
// anonymous pulls.
func (h *Hub) credentials(ctx context.Context) (authn.Keychain, error) {
	uri := h.cfg.Image.AuthenticatedRegistryCredentialsURI
	if uri == "" {
		return nil, nil
	}
	b, err := h.document(ctx, uri)
	if err != nil {
		return nil, fmt.Errorf("registry credentials %s: %w", uri, err)
	}
	return registry.ParseAuthFile(b)
}

// lookaside reads [image] sigstore_config_uri: the registries.d document
// saying where GPG signatures are served (file:// or kbs:///).
func (h *Hub) lookaside(ctx context.Context) (*signature.Lookaside, error) {
	uri := h.cfg.Image.SigstoreConfigURI
	if uri == "" {
		return nil, nil
	}
	b, err := h.document(ctx, uri)
	if err != nil {
		return nil, fmt.Errorf("signature lookaside configuration %s: %w", uri, err)
	}
	return signature.ParseLookaside(b)
}

// document reads a file:// path or a kbs:/// resource.
func (h *Hub) document(ctx context.Context, uri string) ([]byte, error) {
	if path, ok := strings.CutPrefix(uri, "file://"); ok {
		return os.ReadFile(path)
	}
	return h.GetResource(ctx, uri)
}

// layerKeys unwraps encrypted layers' keys with KBS keys.
type layerKeys struct{ h *Hub }

func (k layerKeys) UnwrapKey(ctx context.Context, packet []byte) ([]byte, error) {
	return keyprovider.UnwrapPacket(ctx, k.h.kbs, packet)
}
