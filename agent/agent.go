// Package agent is coco-agent's ttrpc service: the subset of Kata
// Containers' grpc.AgentService and grpc.Image that containerd-shim-coco-v2
// drives. It runs containers with runc's libcontainer inside the sandbox
// (the pod's VM, or namespaces on the host for the local backend), pulls
// their images in the sandbox through the confidential data hub, and never
// trusts host paths: every container lives under the agent's state
// directory, whatever the request names.
package agent

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"sync"

	"github.com/containerd/ttrpc"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/cocoon-cc/cocoon/guest/telemetry/feed"
	pb "github.com/cocoon-cc/cocoon/protocol/ttrpc/agent"
)

// Version is reported in GetGuestDetails.
const Version = "0.1.0"

// ImagePuller pulls an image into an OCI bundle directory (rootfs/ and
// config.json), in the guest: the confidential data hub in production.
type ImagePuller interface {
	PullImage(ctx context.Context, ref, bundleDir string) error
}

// Policy is the agent policy (package agent/policy): the server's
// interceptor checks every request; the agent asks it too whether the host
// may read a process's output, learns of a read it refused (Denied: the
// read then answers with its data withheld, as Kata's agent does) and
// swaps it on SetPolicy.
type Policy interface {
	Check(ctx context.Context, method string, req proto.Message) error
	Denied(ctx context.Context) error
	Set(ctx context.Context, rego string) error
	// Value is the value of one of the policy's rules (nil: undefined).
	Value(ctx context.Context, name string) (any, error)
}

// Config configures an Agent.
type Config struct {
	// StateDir holds the containers' bundles and libcontainer state.
	StateDir string
	// Images pulls images for image_guest_pull storages.
	Images ImagePuller
	// Volumes opens encrypted volumes (the data hub's secure mount).
	Volumes SecureMounter
	// Policy is the agent policy.
	Policy Policy
	// SetHostname lets CreateSandbox set the hostname: the agent owns its
	// UTS namespace (PID 1 in a VM, or the local backend's namespaces).
	SetHostname bool
	// NoPivotRoot enters containers' root with chroot instead of
	// pivot_root, which an initramfs root does not support.
	NoPivotRoot bool
	// CgroupParent holds the containers' cgroups (default
	// /cocoon/<sandbox id>); the local backend names it, to remove it.
	CgroupParent string
	// SharedDir holds the files the host copies in (CopyFile); a VM's
	// agent uses SharedPath itself. Default: <StateDir>/shared.
	SharedDir string
	// SandboxDir holds the pod's emptyDir storages and the guest
	// directories of allowed host paths; a VM's agent uses SandboxPath
	// itself. Default: <StateDir>/sandbox.
	SandboxDir string
	// ContainerMounts and ContainerEnv are what the guest gives every
	// container beside the host's spec: the SPIFFE Workload API socket
	// and the variable naming it (GuestComponents.ContainerMounts).
	ContainerMounts []specs.Mount
	ContainerEnv    []string
	// Telemetry, when initdata's telemetry.toml sets it up, ships the
	// output the policy withholds from the host to the pod's owner
	// instead of discarding it.
	Telemetry Telemetry
	Log       *slog.Logger
}

// Telemetry ships to the pod's owner (package guest/telemetry/feed).
type Telemetry interface {
	// Endpoint names the owner's endpoint, for the host's notice.
	Endpoint() string
	// Ship reads r to its end, shipping its lines as src's; it returns
	// the lines it could not ship.
	Ship(r io.Reader, src feed.Source) int64
}

// Agent serves the agent API.
type Agent struct {
	cfg  Config
	log  *slog.Logger
	root string // libcontainer state

	mu         sync.Mutex
	sandboxID  string
	containers map[string]*container
	oom        chan string       // ids of containers that met the OOM killer
	storages   map[string]string // the pod's emptyDir storages: driver by mount point
}

// New prepares the state directory.
func New(cfg Config) (*Agent, error) {
	if cfg.StateDir == "" || cfg.Policy == nil {
		return nil, fmt.Errorf("agent: a state directory and a policy are required")
	}
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.SharedDir == "" {
		cfg.SharedDir = filepath.Join(cfg.StateDir, "shared")
	}
	if cfg.SandboxDir == "" {
		cfg.SandboxDir = filepath.Join(cfg.StateDir, "sandbox")
	}
	a := &Agent{cfg: cfg, log: log, root: filepath.Join(cfg.StateDir, "runc"), containers: map[string]*container{},
		oom: make(chan string, 16), storages: map[string]string{}}
	for _, d := range []string{a.root, filepath.Join(cfg.StateDir, "containers")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, err
		}
	}
	return a, nil
}

// Register adds the agent's services to s.
func (a *Agent) Register(s *ttrpc.Server) {
	pb.RegisterAgentServiceService(s, a)
	pb.RegisterImageService(s, a)
}

// validID keeps ids usable as path components (containerd's own rule).
var validID = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$`)

func checkID(kind, id string) error {
	if !validID.MatchString(id) {
		return fmt.Errorf("%w: %s id %q", ErrInvalidArgument, kind, id)
	}
	return nil
}

// CreateSandbox records the pod and sets the guest's hostname.
func (a *Agent) CreateSandbox(ctx context.Context, r *pb.CreateSandboxRequest) (*emptypb.Empty, error) {
	if r.SandboxId != "" {
		if err := checkID("sandbox", r.SandboxId); err != nil {
			return nil, toStatus(err)
		}
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.sandboxID != "" {
		return nil, toStatus(fmt.Errorf("%w: sandbox %s", ErrAlreadyExists, a.sandboxID))
	}
	if r.Hostname != "" && a.cfg.SetHostname {
		if err := unix.Sethostname([]byte(r.Hostname)); err != nil {
			return nil, toStatus(fmt.Errorf("%w: hostname %q: %v", ErrInvalidArgument, r.Hostname, err))
		}
	}
	a.sandboxID = r.SandboxId
	if a.sandboxID == "" {
		a.sandboxID = "sandbox"
	}
	a.log.Info("sandbox created", "sandbox", a.sandboxID)
	return &emptypb.Empty{}, nil
}

// DestroySandbox removes every container.
func (a *Agent) DestroySandbox(ctx context.Context, _ *pb.DestroySandboxRequest) (*emptypb.Empty, error) {
	a.mu.Lock()
	all := a.containers
	a.containers = map[string]*container{}
	a.sandboxID = ""
	a.mu.Unlock()
	var firstErr error
	for _, c := range all {
		if err := c.destroy(ctx, 0); err != nil && firstErr == nil {
			firstErr = err
		}
	}
	a.teardownStorages()
	a.log.Info("sandbox destroyed", "containers", len(all))
	return &emptypb.Empty{}, toStatus(firstErr)
}

// GetGuestDetails describes the agent.
func (a *Agent) GetGuestDetails(ctx context.Context, _ *pb.GuestDetailsRequest) (*pb.GuestDetailsResponse, error) {
	return &pb.GuestDetailsResponse{AgentDetails: &pb.AgentDetails{
		Version:         Version,
		InitDaemon:      os.Getpid() == 1,
		StorageHandlers: []string{pb.StorageDriverImageGuestPull, StorageDriverEphemeral, StorageDriverLocal},
		// Built without libseccomp: a spec's seccomp profile is refused
		// rather than silently ignored.
		SupportsSeccomp: false,
	}}, nil
}

// SetPolicy replaces the policy; the interceptor has already checked that
// the current policy allows replacing it.
func (a *Agent) SetPolicy(ctx context.Context, r *pb.SetPolicyRequest) (*emptypb.Empty, error) {
	if err := a.cfg.Policy.Set(ctx, r.Policy); err != nil {
		return nil, toStatus(fmt.Errorf("%w: %v", ErrInvalidArgument, err))
	}
	a.log.Info("policy replaced")
	return &emptypb.Empty{}, nil
}

// PullImage pulls a container's image ahead of CreateContainer.
func (a *Agent) PullImage(ctx context.Context, r *pb.PullImageRequest) (*pb.PullImageResponse, error) {
	if err := checkID("container", r.ContainerId); err != nil {
		return nil, toStatus(err)
	}
	if _, err := a.pull(ctx, r.ContainerId, r.Image); err != nil {
		return nil, toStatus(err)
	}
	return &pb.PullImageResponse{ImageRef: r.Image}, nil
}

// lookup finds a container.
func (a *Agent) lookup(id string) (*container, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	c, ok := a.containers[id]
	if !ok {
		return nil, fmt.Errorf("%w: container %q", ErrNotFound, id)
	}
	return c, nil
}

// bundleDir is where a container's image is unpacked.
func (a *Agent) bundleDir(id string) string {
	return filepath.Join(a.cfg.StateDir, "containers", id)
}

// cgroupParent groups the pod's containers in one cgroup the local
// backend can remove whole: /cocoon/<sandbox id>.
func (a *Agent) cgroupParent() string {
	if a.cfg.CgroupParent != "" {
		return a.cfg.CgroupParent
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.sandboxID == "" {
		return "/cocoon/default"
	}
	return "/cocoon/" + a.sandboxID
}
