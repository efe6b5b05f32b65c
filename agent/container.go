package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"time"

	_ "github.com/opencontainers/cgroups/devices" // lets the cgroup manager apply device rules
	"github.com/opencontainers/cgroups/fs2"
	"github.com/opencontainers/runc/libcontainer"
	"github.com/opencontainers/runc/libcontainer/specconv"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/cocoon-cc/cocoon/guest/telemetry/feed"
	"github.com/cocoon-cc/cocoon/image/bundle"
	pb "github.com/cocoon-cc/cocoon/protocol/ttrpc/agent"
)

// annotationImageName is where CRI names a container's image.
const annotationImageName = "io.kubernetes.cri.image-name"

// annotationContainerName is CRI's name of the container in its pod.
const annotationContainerName = "io.kubernetes.cri.container-name"

// container is one container of the sandbox.
type container struct {
	id     string
	name   string // the Kubernetes container's, for shipped output
	bundle string
	lc     *libcontainer.Container
	init   *process
	mounts []specs.Mount // the spec's, sources in the guest

	mu      sync.Mutex
	started bool
	execs   map[string]*process
}

// CreateContainer pulls the container's image in the sandbox and creates
// the container; StartContainer runs its process.
func (a *Agent) CreateContainer(ctx context.Context, r *pb.CreateContainerRequest) (_ *emptypb.Empty, err error) {
	if err := checkID("container", r.ContainerId); err != nil {
		return nil, toStatus(err)
	}
	if r.OCI == nil {
		return nil, toStatus(fmt.Errorf("%w: container %s has no spec", ErrInvalidArgument, r.ContainerId))
	}
	if err := a.reserve(r.ContainerId); err != nil {
		return nil, toStatus(err)
	}
	c, err := a.create(ctx, r)
	a.mu.Lock()
	if err != nil {
		delete(a.containers, r.ContainerId)
	} else {
		a.containers[r.ContainerId] = c
	}
	a.mu.Unlock()
	if err != nil {
		a.log.Warn("create container failed", "container", r.ContainerId, "err", err)
		bundle.Remove(a.bundleDir(r.ContainerId))
		a.removeShared(r.ContainerId)
		return nil, toStatus(err)
	}
	a.log.Info("container created", "container", c.id)
	return empty(), nil
}

// reserve claims id so that concurrent creates of one id cannot race.
func (a *Agent) reserve(id string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, ok := a.containers[id]; ok {
		return fmt.Errorf("%w: container %q", ErrAlreadyExists, id)
	}
	a.containers[id] = nil
	return nil
}

func (a *Agent) create(ctx context.Context, r *pb.CreateContainerRequest) (*container, error) {
	spec := r.OCI.OCI()
	ref, err := imageRef(r, spec.Annotations)
	if err != nil {
		return nil, err
	}
	image, err := a.pull(ctx, r.ContainerId, ref)
	if err != nil {
		return nil, err
	}
	if err := a.setupStorages(ctx, r.Storages); err != nil {
		return nil, err
	}
	if err := a.openDevices(ctx, r, spec); err != nil {
		return nil, err
	}
	bundle := a.bundleDir(r.ContainerId)
	dropped, err := guestSpec(spec, r.ContainerId, filepath.Join(bundle, "rootfs"), a.cgroupParent(), image, a.bindSource)
	if err != nil {
		return nil, err
	}
	addGuestParts(spec, a.cfg.ContainerMounts, a.cfg.ContainerEnv)
	if r.SandboxPidns {
		dropped = append(dropped, "the sandbox's PID namespace (each container has its own)")
	}
	if len(dropped) > 0 {
		a.log.Info("host parts not used in the sandbox", "container", r.ContainerId, "dropped", dropped)
	}
	cfg, err := specconv.CreateLibcontainerConfig(&specconv.CreateOpts{CgroupName: r.ContainerId, Spec: spec, NoPivotRoot: a.cfg.NoPivotRoot})
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidArgument, err)
	}
	lc, err := libcontainer.Create(a.root, r.ContainerId, cfg)
	if err != nil {
		return nil, err
	}
	p, err := newProcess(r.ContainerId, spec.Process, true)
	if err != nil {
		lc.Destroy()
		return nil, err
	}
	if err := lc.Start(p.lp); err != nil {
		p.closeAll()
		lc.Destroy()
		return nil, fmt.Errorf("start the container's init: %w", err)
	}
	if err := p.started(); err != nil {
		lc.Destroy()
		return nil, err
	}
	name := spec.Annotations[annotationContainerName]
	p.src = feed.Source{ContainerID: r.ContainerId, ContainerName: name}
	a.guardOutput(ctx, r.ContainerId, r.ContainerId, p)
	c := &container{id: r.ContainerId, name: name, bundle: bundle, lc: lc, init: p, mounts: spec.Mounts, execs: map[string]*process{}}
	a.watchOOM(c)
	return c, nil
}

// guardOutput drains a process's output when the policy forbids the host
// to read it: the process must not block on a pipe nobody may empty.
func (a *Agent) guardOutput(ctx context.Context, cid, eid string, p *process) {
	req := &pb.ReadStreamRequest{ContainerId: cid, ExecId: eid}
	if a.cfg.Policy.Check(ctx, "ReadStdout", req) != nil {
		p.withhold(a.cfg.Telemetry)
	}
}

// imageRef is the image a container runs: its image_guest_pull storage
// (Kata's shape, for this container's rootfs), else the image CRI names.
func imageRef(r *pb.CreateContainerRequest, annotations map[string]string) (string, error) {
	if len(r.SharedMounts) > 0 {
		return "", fmt.Errorf("%w: shared mounts between containers", ErrUnsupported)
	}
	// The emptyDir storages are the pod's volumes (setupStorages).
	storages := slices.DeleteFunc(slices.Clone(r.Storages), isVolumeStorage)
	switch n := len(storages); {
	case n == 1 && storages[0].GetDriver() == pb.StorageDriverImageGuestPull:
		if _, err := storages[0].GuestPull(r.ContainerId); err != nil {
			return "", fmt.Errorf("%w: %w", ErrInvalidArgument, err)
		}
		return storages[0].Source, nil
	case n > 0:
		return "", fmt.Errorf("%w: storages other than one %s (driver %q)", ErrUnsupported,
			pb.StorageDriverImageGuestPull, storages[0].GetDriver())
	}
	if ref := annotations[annotationImageName]; ref != "" {
		return ref, nil
	}
	return "", fmt.Errorf("%w: no image: want an %s storage or the %s annotation", ErrInvalidArgument,
		pb.StorageDriverImageGuestPull, annotationImageName)
}

// pull unpacks ref into the container's bundle unless PullImage already
// did, and returns the image's default spec.
func (a *Agent) pull(ctx context.Context, id, ref string) (*specs.Spec, error) {
	dir := a.bundleDir(id)
	config := filepath.Join(dir, "config.json")
	if _, err := os.Stat(config); errors.Is(err, os.ErrNotExist) {
		if a.cfg.Images == nil {
			return nil, fmt.Errorf("%w: no image service in this sandbox", ErrUnsupported)
		}
		start := time.Now()
		if err := a.cfg.Images.PullImage(ctx, ref, dir); err != nil {
			bundle.Remove(dir)
			return nil, fmt.Errorf("%w: %s: %v", ErrImagePull, ref, err)
		}
		a.log.Info("image pulled", "container", id, "image", ref, "seconds", time.Since(start).Seconds())
	}
	b, err := os.ReadFile(config)
	if err != nil {
		return nil, err
	}
	var s specs.Spec
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("%w: image bundle config of %s: %v", ErrImagePull, ref, err)
	}
	return &s, nil
}

// StartContainer runs the container's process.
func (a *Agent) StartContainer(ctx context.Context, r *pb.StartContainerRequest) (*emptypb.Empty, error) {
	c, err := a.lookup(r.ContainerId)
	if err != nil {
		return nil, toStatus(err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.started {
		return nil, toStatus(fmt.Errorf("%w: container %s already started", ErrState, c.id))
	}
	if err := c.lc.Exec(); err != nil {
		return nil, toStatus(fmt.Errorf("start container %s: %w", c.id, err))
	}
	c.started = true
	a.log.Info("container started", "container", c.id)
	return empty(), nil
}

// RemoveContainer kills what still runs and deletes the container.
func (a *Agent) RemoveContainer(ctx context.Context, r *pb.RemoveContainerRequest) (*emptypb.Empty, error) {
	c, err := a.lookup(r.ContainerId)
	if err != nil {
		return nil, toStatus(err)
	}
	if err := c.destroy(ctx, time.Duration(r.Timeout)*time.Second); err != nil {
		return nil, toStatus(err)
	}
	a.mu.Lock()
	delete(a.containers, r.ContainerId)
	a.mu.Unlock()
	a.removeShared(c.id)
	a.log.Info("container removed", "container", c.id)
	return empty(), nil
}

// destroy kills every process, waits for the init to be reaped (at most
// timeout, 0 for as long as ctx allows) and removes the container's state.
func (c *container) destroy(ctx context.Context, timeout time.Duration) error {
	if c == nil {
		return nil
	}
	c.killAll()
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	select {
	case <-c.init.exited:
	case <-ctx.Done():
		return fmt.Errorf("container %s did not exit: %w", c.id, ctx.Err())
	}
	c.init.closeAll()
	c.mu.Lock()
	for _, p := range c.execs {
		p.closeAll()
	}
	c.mu.Unlock()
	err := c.lc.Destroy()
	if rerr := bundle.Remove(c.bundle); err == nil {
		err = rerr
	}
	return err
}

// killAll sends SIGKILL to every process of the container.
func (c *container) killAll() {
	if pids, err := c.lc.Processes(); err == nil {
		for _, pid := range pids {
			unix.Kill(pid, unix.SIGKILL)
		}
	}
	c.lc.Signal(unix.SIGKILL)
}

// process finds the container's init (exec id empty or the container's id)
// or one of its exec processes.
func (c *container) process(execID string) (*process, error) {
	if execID == "" || execID == c.id {
		return c.init, nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	p, ok := c.execs[execID]
	if !ok {
		return nil, fmt.Errorf("%w: process %q of container %s", ErrNotFound, execID, c.id)
	}
	return p, nil
}

// lookupProcess finds a process by container and exec id.
func (a *Agent) lookupProcess(cid, eid string) (*container, *process, error) {
	c, err := a.lookup(cid)
	if err != nil {
		return nil, nil, err
	}
	p, err := c.process(eid)
	return c, p, err
}

// ExecProcess runs another process in a started container.
func (a *Agent) ExecProcess(ctx context.Context, r *pb.ExecProcessRequest) (*emptypb.Empty, error) {
	c, err := a.lookup(r.ContainerId)
	if err != nil {
		return nil, toStatus(err)
	}
	if err := checkID("exec", r.ExecId); err != nil || r.ExecId == c.id {
		return nil, toStatus(fmt.Errorf("%w: exec id %q", ErrInvalidArgument, r.ExecId))
	}
	spec := r.Process.OCI()
	if spec == nil || len(spec.Args) == 0 {
		return nil, toStatus(fmt.Errorf("%w: exec %s has no command", ErrInvalidArgument, r.ExecId))
	}
	if spec.Cwd == "" {
		spec.Cwd = "/"
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, dup := c.execs[r.ExecId]; dup {
		return nil, toStatus(fmt.Errorf("%w: exec %q", ErrAlreadyExists, r.ExecId))
	}
	p, err := newProcess(r.ExecId, spec, false)
	if err != nil {
		return nil, toStatus(err)
	}
	if err := c.lc.Run(p.lp); err != nil {
		p.closeAll()
		return nil, toStatus(fmt.Errorf("exec in %s: %w", c.id, err))
	}
	if err := p.started(); err != nil {
		return nil, toStatus(err)
	}
	p.src = feed.Source{ContainerID: c.id, ContainerName: c.name, ExecID: r.ExecId}
	a.guardOutput(ctx, c.id, r.ExecId, p)
	c.execs[r.ExecId] = p
	return empty(), nil
}

// SignalProcess signals a process; SIGKILL to the init kills the whole
// container, as its processes would die with a private PID namespace.
func (a *Agent) SignalProcess(ctx context.Context, r *pb.SignalProcessRequest) (*emptypb.Empty, error) {
	c, p, err := a.lookupProcess(r.ContainerId, r.ExecId)
	if err != nil {
		return nil, toStatus(err)
	}
	sig := syscall.Signal(r.Signal)
	if r.Signal == 0 || r.Signal > 64 {
		return nil, toStatus(fmt.Errorf("%w: signal %d", ErrInvalidArgument, r.Signal))
	}
	select {
	case <-p.exited:
		return nil, toStatus(fmt.Errorf("%w: process %s already exited", ErrNotFound, p.id))
	default:
	}
	if p == c.init && sig == unix.SIGKILL {
		c.killAll()
		return empty(), nil
	}
	if p == c.init {
		err = c.lc.Signal(sig)
	} else {
		err = p.lp.Signal(sig)
	}
	return empty(), toStatus(err)
}

// WaitProcess blocks until the process exits and returns its status,
// with the container's termination message when the host asks for it.
func (a *Agent) WaitProcess(ctx context.Context, r *pb.WaitProcessRequest) (*pb.WaitProcessResponse, error) {
	c, p, err := a.lookupProcess(r.ContainerId, r.ExecId)
	if err != nil {
		return nil, toStatus(err)
	}
	select {
	case <-p.exited:
	case <-ctx.Done():
		return nil, toStatus(ctx.Err())
	}
	w := &pb.WaitProcessResponse{Status: p.exitStatus()}
	if p != c.init {
		go c.reapExec(p)
	} else {
		w.OomKilled = c.oomKilled()
		if r.TerminationMessagePath != "" {
			a.terminationMessage(ctx, c, r.TerminationMessagePath, w)
		}
	}
	return w, nil
}

// oomKilled tells whether the guest's OOM killer acted in the container's
// cgroup (v2, as the guest mounts it).
func (c *container) oomKilled() bool {
	st, err := c.lc.State()
	if err != nil {
		return false
	}
	n, err := fs2.OOMKillCount(st.CgroupPaths[""])
	return err == nil && n > 0
}

// execLinger bounds how long an exited exec keeps output nobody reads.
const execLinger = 30 * time.Second

// reapExec forgets an exited exec process once its output was read to the
// end (or after execLinger), so that a reader racing the exit loses nothing.
// Withheld output is drained in the guest: the host's readers must still
// hear that it is withheld, or the log would miss its notice.
func (c *container) reapExec(p *process) {
	linger := time.After(execLinger)
	select {
	case <-p.drained:
	case <-linger:
	}
	if p.isWithheld() {
		select {
		case <-p.told:
		case <-linger:
		}
	}
	c.mu.Lock()
	if c.execs[p.id] == p {
		delete(c.execs, p.id)
	}
	c.mu.Unlock()
	p.closeAll()
}

// PauseContainer freezes the container.
func (a *Agent) PauseContainer(ctx context.Context, r *pb.PauseContainerRequest) (*emptypb.Empty, error) {
	c, err := a.lookup(r.ContainerId)
	if err != nil {
		return nil, toStatus(err)
	}
	return empty(), toStatus(c.lc.Pause())
}

// ResumeContainer thaws the container.
func (a *Agent) ResumeContainer(ctx context.Context, r *pb.ResumeContainerRequest) (*emptypb.Empty, error) {
	c, err := a.lookup(r.ContainerId)
	if err != nil {
		return nil, toStatus(err)
	}
	return empty(), toStatus(c.lc.Resume())
}
