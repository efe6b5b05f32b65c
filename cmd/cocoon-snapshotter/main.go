// Command cocoon-snapshotter serves package snapshotter to containerd as a
// proxy plugin:
//
//	[proxy_plugins.cocoon]
//	  type = "snapshot"
//	  address = "/run/cocoon-snapshotter/snapshotter.sock"
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"syscall"
	"time"

	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	"github.com/containerd/containerd/contrib/snapshotservice"
	"github.com/containerd/containerd/snapshots/overlay"
	"google.golang.org/grpc"

	"github.com/cocoon-cc/cocoon/snapshotter"
)

func main() {
	containerdRoot := flag.String("containerd-root", "/var/lib/containerd", "containerd's root directory (root in its config.toml): its CRI plugin reports the image filesystem at <containerd-root>/io.containerd.snapshotter.v1.cocoon")
	root := flag.String("root", "", "where the overlay snapshots live (default: <containerd-root>/io.containerd.snapshotter.v1.cocoon; elsewhere, that path becomes a link to it)")
	address := flag.String("address", "/run/cocoon-snapshotter/snapshotter.sock", "the gRPC socket containerd connects to")
	images := flag.String("images", "", "regular expression of the image references pulled in the guest (default: all)")
	ctrd := flag.String("containerd-address", "/run/containerd/containerd.sock", "containerd's socket: which images it unpacked on the host (with --images), to give them the layers an image pulled in the guest left empty")
	removeUnused := flag.Bool("remove-unused", false, "do not serve: remove --root once no mount uses it (containers made from its snapshots are gone), then exit; what an uninstall leaves running")
	flag.Parse()
	if *root == "" {
		*root = snapshotter.ImageFSPath(*containerdRoot)
	}
	if *removeUnused {
		if err := removeRoot(*containerdRoot, *root); err != nil {
			fmt.Fprintln(os.Stderr, "cocoon-snapshotter:", err)
			os.Exit(1)
		}
		return
	}
	if err := snapshotter.LinkImageFS(*containerdRoot, *root); err != nil {
		fmt.Fprintln(os.Stderr, "cocoon-snapshotter: the CRI image filesystem path:", err)
		os.Exit(1)
	}
	if err := run(*root, *address, *images, *ctrd); err != nil {
		fmt.Fprintln(os.Stderr, "cocoon-snapshotter:", err)
		os.Exit(1)
	}
}

// removeRoot removes root and, when root is elsewhere, the link to it at
// the CRI image filesystem path, once no mount uses the snapshots.
func removeRoot(containerdRoot, root string) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := snapshotter.RemoveUnused(ctx, root, 2*time.Second); err != nil {
		return err
	}
	if p := snapshotter.ImageFSPath(containerdRoot); p != filepath.Clean(root) {
		if fi, err := os.Lstat(p); err == nil && fi.Mode()&os.ModeSymlink != 0 {
			return os.Remove(p)
		}
	}
	return nil
}

func run(root, address, images, containerdAddress string) error {
	var re *regexp.Regexp
	if images != "" {
		var err error
		if re, err = regexp.Compile(images); err != nil {
			return fmt.Errorf("--images: %w", err)
		}
	}
	sn, err := overlay.NewSnapshotter(root)
	if err != nil {
		return err
	}
	defer sn.Close()
	if err := os.MkdirAll(filepath.Dir(address), 0o700); err != nil {
		return err
	}
	if err := os.Remove(address); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	l, err := net.Listen("unix", address)
	if err != nil {
		return err
	}
	srv := grpc.NewServer()
	ci, err := snapshotter.NewContainerdImages(containerdAddress)
	if err != nil {
		return fmt.Errorf("--containerd-address: %w", err)
	}
	defer ci.Close()
	h := snapshotter.Hydrator{Images: ci, Layers: snapshotter.NewRegistryLayers()}
	snapshotsapi.RegisterSnapshotsServer(srv, snapshotservice.FromSnapshotter(snapshotter.New(sn, re, h)))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		srv.GracefulStop()
	}()
	fmt.Fprintln(os.Stderr, "cocoon-snapshotter: serving on", address)
	return srv.Serve(l)
}
