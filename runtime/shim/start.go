package shim

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"syscall"

	containers "github.com/containerd/containerd/api/services/containers/v1"
	"github.com/containerd/containerd/namespaces"
	"github.com/containerd/containerd/runtime/v2/shim"
	"github.com/containerd/log"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
)

// StartShim starts the shim process serving the task, or returns the
// address of the one already serving its pod: CRI's containers name their
// sandbox in io.kubernetes.cri.sandbox-id.
func (s *Service) StartShim(ctx context.Context, opts shim.StartOpts) (_ string, retErr error) {
	spec, err := readSpec(".")
	if err != nil {
		return "", err
	}
	grouping := opts.ID
	if sid := spec.Annotations[annotationSandboxID]; sid != "" {
		grouping = sid
	}
	address, err := shim.SocketAddress(ctx, opts.Address, grouping)
	if err != nil {
		return "", err
	}
	socket, err := shim.NewSocket(address)
	if err != nil {
		if !shim.SocketEaddrinuse(err) {
			return "", fmt.Errorf("create the shim socket: %w", err)
		}
		if shim.CanConnect(address) {
			// The pod's shim is running: this container joins it.
			return address, shim.WriteAddress("address", address)
		}
		if err := shim.RemoveSocket(address); err != nil {
			return "", fmt.Errorf("remove a stale shim socket: %w", err)
		}
		if socket, err = shim.NewSocket(address); err != nil {
			return "", fmt.Errorf("create the shim socket: %w", err)
		}
	}
	defer func() {
		if retErr != nil {
			socket.Close()
			shim.RemoveSocket(address)
		}
	}()
	if err := shim.WriteAddress("address", address); err != nil {
		return "", err
	}
	f, err := socket.File()
	if err != nil {
		return "", err
	}
	defer f.Close()
	cmd, err := serveCommand(ctx, opts)
	if err != nil {
		return "", err
	}
	cmd.ExtraFiles = []*os.File{f}
	if err := cmd.Start(); err != nil {
		return "", err
	}
	go cmd.Wait()
	return address, nil
}

// serveCommand runs this binary again without the "start" action: the
// long-lived shim, with its socket as fd 3.
func serveCommand(ctx context.Context, opts shim.StartOpts) (*exec.Cmd, error) {
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return nil, err
	}
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	args := []string{"-namespace", ns, "-id", opts.ID, "-address", opts.Address}
	if opts.Debug {
		args = append(args, "-debug")
	}
	cmd := exec.Command(self, args...)
	cmd.Dir, _ = os.Getwd()
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	return cmd, nil
}

// imageOf asks containerd which image a container was created from, for
// containers that do not carry CRI's image annotation (ctr run).
func (s *Service) imageOf(ctx context.Context, id string) string {
	f := flag.Lookup("address")
	if f == nil || f.Value.String() == "" {
		return ""
	}
	conn, err := grpc.NewClient("unix://"+f.Value.String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		log.G(ctx).WithError(err).Warn("connect to containerd")
		return ""
	}
	defer conn.Close()
	ns, _ := namespaces.Namespace(ctx)
	ctx = metadata.AppendToOutgoingContext(ctx, "containerd-namespace", ns)
	r, err := containers.NewContainersClient(conn).Get(ctx, &containers.GetContainerRequest{ID: id})
	if err != nil {
		log.G(ctx).WithError(err).Warn("look up the container's image")
		return ""
	}
	return r.Container.Image
}
