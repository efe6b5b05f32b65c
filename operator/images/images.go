// Package images builds Cocoon's container images (the operator, the node
// installer, the KBS) and the guest image from the project's own static
// binaries, with no base image: one layer each, written as OCI layouts.
// The same sources give the same digests (fixed times, owners and order).
package images

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Image is one image: binaries built from ./cmd, files from the
// repository, and how it starts.
type Image struct {
	Name       string
	Commands   []string          // ./cmd/<name>, built static, at /<name>
	Files      map[string]string // path in the image -> path in the repository (or absolute)
	Entrypoint []string
	Labels     map[string]string // the image configuration's
}

// Images are the images make images builds.
var Images = []Image{
	{Name: "cocoon-operator", Commands: []string{"cocoon-operator"}, Entrypoint: []string{"/cocoon-operator"}},
	{Name: "cocoon-node-installer", Commands: []string{"cocoon-node-installer", "containerd-shim-coco-v2", "coco-agent", "cocoon-snapshotter"},
		Entrypoint: []string{"/cocoon-node-installer"}},
	{Name: "kbs", Commands: []string{"kbs", "kbs-client"}, Entrypoint: []string{"/kbs"}},
	{Name: "cocoon-guest", Files: map[string]string{"vmlinuz": "build/guest/vmlinuz", "initramfs.cpio.gz": "build/guest/initramfs.cpio.gz"}},
}

// Find returns the image called name.
func Find(name string) (Image, error) {
	for _, img := range Images {
		if img.Name == name {
			return img, nil
		}
	}
	return Image{}, fmt.Errorf("no image %q", name)
}

// epoch is every file's and the image's time, for reproducible digests.
var epoch = time.Unix(0, 0).UTC()

// Build builds img from the repository at repo into the OCI layout
// out/<name> (tag "latest") and returns the image's digest.
func Build(ctx context.Context, repo, out string, img Image) (v1.Hash, error) {
	files := map[string]string{}
	for dst, src := range img.Files {
		if !filepath.IsAbs(src) {
			src = filepath.Join(repo, src)
		}
		files[dst] = src
	}
	if len(img.Commands) > 0 {
		bin, err := os.MkdirTemp("", "cocoon-images-")
		if err != nil {
			return v1.Hash{}, err
		}
		defer os.RemoveAll(bin)
		if err := buildStatic(ctx, repo, bin, img.Commands); err != nil {
			return v1.Hash{}, err
		}
		for _, c := range img.Commands {
			files[c] = filepath.Join(bin, c)
		}
	}
	layer, err := layerOf(files)
	if err != nil {
		return v1.Hash{}, err
	}
	image, err := mutate.AppendLayers(mutate.MediaType(empty.Image, types.OCIManifestSchema1), layer)
	if err != nil {
		return v1.Hash{}, err
	}
	image = mutate.ConfigMediaType(image, types.OCIConfigJSON)
	cfg, err := image.ConfigFile()
	if err != nil {
		return v1.Hash{}, err
	}
	cfg = cfg.DeepCopy()
	cfg.Architecture, cfg.OS, cfg.Created = runtime.GOARCH, "linux", v1.Time{Time: epoch}
	cfg.Config.Entrypoint, cfg.Config.Labels = img.Entrypoint, img.Labels
	if len(img.Entrypoint) > 0 {
		cfg.Config.User = "0:0" // the installer needs root; the others drop what their pods' securityContext asks
	}
	if image, err = mutate.ConfigFile(image, cfg); err != nil {
		return v1.Hash{}, err
	}
	dir := filepath.Join(out, img.Name)
	if err := os.RemoveAll(dir); err != nil {
		return v1.Hash{}, err
	}
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		return v1.Hash{}, err
	}
	if err := p.AppendImage(image, layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": "latest"})); err != nil {
		return v1.Hash{}, err
	}
	return image.Digest()
}

// buildStatic builds ./cmd/<name> for each command into dir, linked
// statically (libcontainer's nsenter, in the shim and the agent, is C).
func buildStatic(ctx context.Context, repo, dir string, commands []string) error {
	args := []string{"build", "-trimpath", "-tags=netgo,osusergo", "-ldflags=-s -w -buildid= -extldflags -static", "-o", dir + "/"}
	for _, c := range commands {
		args = append(args, "./cmd/"+c)
	}
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = repo
	cmd.Env = append(os.Environ(), "CGO_ENABLED=1")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %v: %w\n%s", commands, err, out)
	}
	return nil
}

// layerOf is a layer of files at the root, in name order, owned by root,
// dated epoch.
func layerOf(files map[string]string) (v1.Layer, error) {
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, n := range names {
		if err := addFile(tw, n, files[n]); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	b := buf.Bytes()
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil },
		tarball.WithMediaType(types.OCILayer))
}

func addFile(tw *tar.Writer, name, src string) error {
	f, err := os.Open(src)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return errors.New(src + " is not a regular file")
	}
	mode := int64(0o644)
	if fi.Mode()&0o111 != 0 {
		mode = 0o755
	}
	h := &tar.Header{Name: name, Mode: mode, Size: fi.Size(), ModTime: epoch, Typeflag: tar.TypeReg, Format: tar.FormatPAX}
	if err := tw.WriteHeader(h); err != nil {
		return err
	}
	_, err = io.Copy(tw, f)
	return err
}
