// Package shim is containerd-shim-coco-v2: a containerd runtime v2 shim
// that runs each pod in its own sandbox (a confidential VM, or the local
// backend's namespaces) and its containers through the coco-agent inside.
// Images are pulled in the sandbox: the rootfs mounts containerd prepares
// on the host are never used. One shim process serves a whole pod: CRI's
// containers join their sandbox's shim by io.kubernetes.cri.sandbox-id.
package shim

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	eventstypes "github.com/containerd/containerd/api/events"
	taskAPI "github.com/containerd/containerd/api/runtime/task/v2"
	"github.com/containerd/containerd/api/types/task"
	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/namespaces"
	runtimeoptions "github.com/containerd/containerd/pkg/runtimeoptions/v1"
	"github.com/containerd/containerd/protobuf"
	ptypes "github.com/containerd/containerd/protobuf/types"
	"github.com/containerd/containerd/runtime"
	"github.com/containerd/containerd/runtime/v2/shim"
	"github.com/containerd/log"
	"github.com/containerd/ttrpc"
	"github.com/containerd/typeurl/v2"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/cocoon-cc/cocoon/protocol/ttrpc/agent"
	"github.com/cocoon-cc/cocoon/runtime/sandbox"
)

// CRI's annotations.
const (
	annotationContainerType = "io.kubernetes.cri.container-type"
	annotationSandboxID     = "io.kubernetes.cri.sandbox-id"
	annotationImageName     = "io.kubernetes.cri.image-name"
	containerTypeSandbox    = "sandbox"
)

// Service is the shim's task service for one pod.
type Service struct {
	id        string
	publisher shim.Publisher
	shutdown  func()
	factories map[string]Factory

	mu    sync.Mutex
	pod   *pod
	tasks map[string]*ctask
}

// pod is the sandbox and the connection to its agent.
type pod struct {
	id     string
	sb     sandbox.Sandbox
	client *ttrpc.Client
	agent  pb.AgentServiceService
	dir    string
	vols   volumes
	disks  *podDisks // nil: the sandbox takes no disks
	res    *podResources
	cgroup *podCgroup // the host cgroup of the pod's sandbox, if containerd named one
}

// ctask is a containerd task: a container, or the pod's sandbox itself.
type ctask struct {
	id      string
	bundle  string
	sandbox bool // the pod's pause task: the sandbox stands for it
	init    *proc
	execs   map[string]*proc
}

// New returns the shim's Init for shim.Run; factories are the sandbox
// backends by name.
func New(factories map[string]Factory) shim.Init {
	return func(ctx context.Context, id string, publisher shim.Publisher, shutdown func()) (shim.Shim, error) {
		return &Service{id: id, publisher: publisher, shutdown: shutdown, factories: factories, tasks: map[string]*ctask{}}, nil
	}
}

var _ shim.Shim = (*Service)(nil)

func empty() *ptypes.Empty { return &ptypes.Empty{} }

func (s *Service) publish(ctx context.Context, topic string, event any) {
	ns, _ := namespaces.Namespace(ctx)
	ctx = namespaces.WithNamespace(context.WithoutCancel(ctx), ns)
	if err := s.publisher.Publish(ctx, topic, event); err != nil {
		log.G(ctx).WithError(err).WithField("topic", topic).Warn("publish event")
	}
}

func (s *Service) task(id string) (*ctask, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.tasks[id]
	if !ok {
		return nil, errdefs.ToGRPCf(errdefs.ErrNotFound, "task %s", id)
	}
	return t, nil
}

// taskProc finds a task and one of its processes.
func (s *Service) taskProc(id, execID string) (*ctask, *proc, error) {
	t, err := s.task(id)
	if err != nil {
		return nil, nil, err
	}
	p, err := t.proc(execID)
	return t, p, err
}

func (t *ctask) proc(execID string) (*proc, error) {
	if execID == "" {
		return t.init, nil
	}
	p, ok := t.execs[execID]
	if !ok {
		return nil, errdefs.ToGRPCf(errdefs.ErrNotFound, "process %s of task %s", execID, t.id)
	}
	return p, nil
}

func readSpec(bundle string) (*specs.Spec, error) {
	b, err := os.ReadFile(filepath.Join(bundle, "config.json"))
	if err != nil {
		return nil, err
	}
	var s specs.Spec
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("%w: bundle config.json: %v", errdefs.ErrInvalidArgument, err)
	}
	return &s, nil
}

// Create starts the pod's sandbox with its first task, then creates
// containers in it.
func (s *Service) Create(ctx context.Context, r *taskAPI.CreateTaskRequest) (_ *taskAPI.CreateTaskResponse, err error) {
	spec, err := readSpec(r.Bundle)
	if err != nil {
		return nil, errdefs.ToGRPC(err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, dup := s.tasks[r.ID]; dup {
		return nil, errdefs.ToGRPCf(errdefs.ErrAlreadyExists, "task %s", r.ID)
	}
	if s.pod == nil {
		if s.pod, err = s.startPod(ctx, r, spec); err != nil {
			return nil, errdefs.ToGRPC(err)
		}
	}
	p, err := newProc(ctx, r.ID, "", stdio{stdin: r.Stdin, stdout: r.Stdout, stderr: r.Stderr, terminal: r.Terminal})
	if err != nil {
		return nil, errdefs.ToGRPCf(errdefs.ErrInvalidArgument, "%v", err)
	}
	t := &ctask{id: r.ID, bundle: r.Bundle, init: p, execs: map[string]*proc{}}
	if spec.Annotations[annotationContainerType] == containerTypeSandbox {
		t.sandbox = true
	} else if err := s.createContainer(ctx, t, spec); err != nil {
		p.stopStdin()
		return nil, err
	}
	s.tasks[r.ID] = t
	pid := uint32(s.pod.sb.Info().Pid)
	s.publish(ctx, runtime.TaskCreateEventTopic, &eventstypes.TaskCreate{ContainerID: r.ID, Bundle: r.Bundle,
		IO: &eventstypes.TaskIO{Stdin: r.Stdin, Stdout: r.Stdout, Stderr: r.Stderr, Terminal: r.Terminal}, Pid: pid})
	return &taskAPI.CreateTaskResponse{Pid: pid}, nil
}

// startPod creates the sandbox chosen by the configuration and connects
// to its agent; on any error nothing is left running.
func (s *Service) startPod(ctx context.Context, r *taskAPI.CreateTaskRequest, spec *specs.Spec) (_ *pod, err error) {
	cfg, err := LoadConfig(configPath(r))
	if err != nil {
		return nil, err
	}
	factory, ok := s.factories[cfg.Sandbox.Backend]
	if !ok {
		return nil, fmt.Errorf("%w: unknown sandbox backend %q", ErrConfig, cfg.Sandbox.Backend)
	}
	init, err := DecodeInitdata(spec.Annotations[AnnotationInitdata])
	if err != nil {
		return nil, err
	}
	id := r.ID
	if sid := spec.Annotations[annotationSandboxID]; sid != "" {
		id = sid
	}
	dir := stateDir(ctx, id)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	res := newPodResources(cfg)
	vcpus, mib, err := res.bootSize(spec.Annotations)
	if err != nil {
		return nil, err
	}
	cg, err := joinPodCgroup(spec.Linux)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			cg.leave()
		}
	}()
	sb, err := factory(ctx, sandbox.Config{ID: id, StateDir: dir, Initdata: init, MemoryMiB: mib, VCPUs: vcpus,
		MaxMemoryMiB: cfg.Sandbox.MaxMemoryMiB, MaxVCPUs: cfg.Sandbox.MaxVCPUs, NetNS: podNetNS(spec)}, cfg)
	if err != nil {
		return nil, err
	}
	sctx, cancel := context.WithTimeout(ctx, cfg.Sandbox.StartTimeout.Duration)
	defer cancel()
	if err := sb.Start(sctx); err != nil {
		return nil, fmt.Errorf("start the %s sandbox: %w", sb.Info().Backend, err)
	}
	defer func() {
		if err != nil {
			sb.Stop(context.WithoutCancel(ctx))
		}
	}()
	if info := sb.Info(); !info.Confidential {
		log.G(ctx).WithField("backend", info.Backend).Warn("this pod's sandbox is NOT confidential: the host can read its memory")
	}
	conn, err := sb.Dial(sctx)
	if err != nil {
		return nil, err
	}
	client := ttrpc.NewClient(conn)
	p := &pod{id: id, sb: sb, client: client, agent: pb.NewAgentServiceClient(client), dir: dir, res: res, cgroup: cg,
		disks: newPodDisks(sb, dir, cfg)}
	if g, ok := sb.(guestNetworker); ok {
		if err := configureNetwork(sctx, g, p.agent); err != nil {
			client.Close()
			return nil, err
		}
	}
	if _, err := p.agent.CreateSandbox(sctx, &pb.CreateSandboxRequest{SandboxId: id, Hostname: spec.Hostname}); err != nil {
		client.Close()
		return nil, agentError("create the sandbox", err)
	}
	go s.watchPod(ctx, p)
	go s.watchOOM(ctx, p)
	return p, nil
}

// StateRoot holds the sandboxes' sockets, logs and disks.
const StateRoot = "/run/cocoon/sandboxes"

// stateDir is a pod's directory: short, since it holds unix sockets.
func stateDir(ctx context.Context, id string) string {
	ns, _ := namespaces.Namespace(ctx)
	sum := sha256.Sum256([]byte(ns + "/" + id))
	return filepath.Join(StateRoot, hex.EncodeToString(sum[:8]))
}

// configPath is the runtime options' ConfigPath (CRI passes it for
// runtimes other than runc), else $COCOON_SHIM_CONFIG, else the default.
func configPath(r *taskAPI.CreateTaskRequest) string {
	if r.Options != nil {
		if v, err := typeurl.UnmarshalAny(r.Options); err == nil {
			if o, ok := v.(*runtimeoptions.Options); ok && o.ConfigPath != "" {
				return o.ConfigPath
			}
		}
	}
	if p := os.Getenv("COCOON_SHIM_CONFIG"); p != "" {
		return p
	}
	return DefaultConfigPath
}

// watchPod ends every task when the sandbox ends by itself (VM crash,
// agent exit): their waits return 255.
func (s *Service) watchPod(ctx context.Context, p *pod) {
	<-p.sb.Done()
	err := p.sb.Err()
	if err == nil {
		return
	}
	log.G(ctx).WithError(err).Error("the pod's sandbox ended")
	s.mu.Lock()
	var all []*proc
	for _, t := range s.tasks {
		all = append(all, t.init)
		for _, e := range t.execs {
			all = append(all, e)
		}
	}
	s.mu.Unlock()
	for _, pr := range all {
		s.exited(ctx, pr, 255)
	}
}

// exited records a process's exit and publishes it.
func (s *Service) exited(ctx context.Context, p *proc, code uint32) {
	p.waitOutput(2 * time.Second)
	if !p.setExited(code) {
		return
	}
	p.stopStdin()
	s.mu.Lock()
	var pid uint32
	if s.pod != nil {
		pid = uint32(s.pod.sb.Info().Pid)
	}
	s.mu.Unlock()
	id := p.execID
	if id == "" {
		id = p.cid
	}
	s.publish(ctx, runtime.TaskExitEventTopic, &eventstypes.TaskExit{ContainerID: p.cid, ID: id, Pid: pid,
		ExitStatus: code, ExitedAt: protobuf.ToTimestamp(time.Now())})
}

// createContainer asks the agent to pull the image and create the
// container, as Kata's runtime does (guest.go).
func (s *Service) createContainer(ctx context.Context, t *ctask, spec *specs.Spec) error {
	ref := spec.Annotations[annotationImageName]
	if ref == "" {
		ref = s.imageOf(ctx, t.id)
	}
	if ref == "" {
		return errdefs.ToGRPCf(errdefs.ErrInvalidArgument, "container %s: no image to pull in the sandbox: set the %s annotation", t.id, annotationImageName)
	}
	storages, copies, err := guestMounts(ctx, s.pod.agent, s.pod.disks, t.id, spec)
	if err != nil {
		return errdefs.ToGRPCf(errdefs.ErrFailedPrecondition, "container %s: %v", t.id, err)
	}
	req, err := createRequest(t.id, t.bundle, ref, spec)
	if err != nil {
		return err
	}
	req.Storages = append(req.Storages, storages...)
	if s.pod.disks != nil {
		if req.Devices, err = s.pod.disks.blockDevices(ctx, spec); err != nil {
			return errdefs.ToGRPCf(errdefs.ErrFailedPrecondition, "container %s: %v", t.id, err)
		}
	}
	if err := s.fit(ctx, s.pod, t.id, spec.Linux); err != nil {
		return err
	}
	if _, err := s.pod.agent.CreateContainer(ctx, req); err != nil {
		return agentError("create container "+t.id, err)
	}
	s.pod.vols.watch(ctx, s.pod.agent, t.id, copies)
	t.init.termination = terminationLogOf(copies)
	return nil
}

// agentError keeps the agent's status code (NotFound, PermissionDenied...)
// and says which step failed.
func agentError(step string, err error) error {
	st, ok := status.FromError(err)
	if !ok {
		return status.Errorf(codes.Unavailable, "%s: agent unreachable: %v", step, err)
	}
	return status.Errorf(st.Code(), "%s: %s", step, st.Message())
}

// Start runs a task's process.
func (s *Service) Start(ctx context.Context, r *taskAPI.StartRequest) (*taskAPI.StartResponse, error) {
	t, p, err := s.taskProc(r.ID, r.ExecID)
	if err != nil {
		return nil, err
	}
	pid := uint32(s.pod.sb.Info().Pid)
	switch {
	case t.sandbox:
	case r.ExecID == "":
		if _, err := s.pod.agent.StartContainer(ctx, &pb.StartContainerRequest{ContainerId: t.id}); err != nil {
			return nil, agentError("start "+t.id, err)
		}
	}
	p.setRunning()
	if !t.sandbox {
		p.copyIO(context.WithoutCancel(ctx), s.pod.agent)
		go s.waitProcess(context.WithoutCancel(ctx), p)
	}
	if r.ExecID == "" {
		s.publish(ctx, runtime.TaskStartEventTopic, &eventstypes.TaskStart{ContainerID: t.id, Pid: pid})
	} else {
		s.publish(ctx, runtime.TaskExecStartedEventTopic, &eventstypes.TaskExecStarted{ContainerID: t.id, ExecID: r.ExecID, Pid: pid})
	}
	return &taskAPI.StartResponse{Pid: pid}, nil
}

// waitProcess waits on the agent for the process's exit and hands its
// OOM kill and termination message to the kubelet before reporting it.
func (s *Service) waitProcess(ctx context.Context, p *proc) {
	w, err := s.pod.agent.WaitProcess(ctx, &pb.WaitProcessRequest{ContainerId: p.cid, ExecId: p.execID,
		TerminationMessagePath: p.termination.terminationPath()})
	code := uint32(255)
	if err == nil {
		code = uint32(w.Status)
		if w.OomKilled {
			// Before the exit, for CRI to report OOMKilled.
			s.publish(ctx, runtime.TaskOOMEventTopic, &eventstypes.TaskOOM{ContainerID: p.cid})
		}
		if err := p.termination.deliverTermination(w); err != nil {
			log.G(ctx).WithError(err).WithField("id", p.cid).Warn("write the termination message")
		}
	} else {
		log.G(ctx).WithError(err).WithField("id", p.agentExecID()).Warn("wait on the agent failed")
	}
	s.exited(ctx, p, code)
}

// Exec creates an exec process; Start runs it.
func (s *Service) Exec(ctx context.Context, r *taskAPI.ExecProcessRequest) (*ptypes.Empty, error) {
	t, err := s.task(r.ID)
	if err != nil {
		return nil, err
	}
	if t.sandbox {
		return nil, errdefs.ToGRPCf(errdefs.ErrNotImplemented, "exec in the sandbox task %s", t.id)
	}
	var ps specs.Process
	if err := json.Unmarshal(r.Spec.GetValue(), &ps); err != nil {
		return nil, errdefs.ToGRPCf(errdefs.ErrInvalidArgument, "exec process spec: %v", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, dup := t.execs[r.ExecID]; dup {
		return nil, errdefs.ToGRPCf(errdefs.ErrAlreadyExists, "exec %s", r.ExecID)
	}
	p, err := newProc(ctx, t.id, r.ExecID, stdio{stdin: r.Stdin, stdout: r.Stdout, stderr: r.Stderr, terminal: r.Terminal})
	if err != nil {
		return nil, errdefs.ToGRPCf(errdefs.ErrInvalidArgument, "%v", err)
	}
	proc := pb.SpecFromOCI(&specs.Spec{Process: &ps}).Process
	if _, err := s.pod.agent.ExecProcess(ctx, &pb.ExecProcessRequest{ContainerId: t.id, ExecId: r.ExecID, Process: proc}); err != nil {
		p.stopStdin()
		return nil, agentError("exec in "+t.id, err)
	}
	t.execs[r.ExecID] = p
	s.publish(ctx, runtime.TaskExecAddedEventTopic, &eventstypes.TaskExecAdded{ContainerID: t.id, ExecID: r.ExecID})
	return empty(), nil
}

// Kill signals a process; killing the sandbox task stops the sandbox.
func (s *Service) Kill(ctx context.Context, r *taskAPI.KillRequest) (*ptypes.Empty, error) {
	t, p, err := s.taskProc(r.ID, r.ExecID)
	if err != nil {
		return nil, err
	}
	if st, _, _ := p.state(); st == task.Status_STOPPED {
		return empty(), nil
	}
	if t.sandbox {
		go s.stopSandboxTask(context.WithoutCancel(ctx), p)
		return empty(), nil
	}
	if st, _, _ := p.state(); st == task.Status_CREATED && r.ExecID == "" {
		// Never started: there is nothing to signal but the created process.
		r.Signal = uint32(syscall.SIGKILL)
	}
	_, err = s.pod.agent.SignalProcess(ctx, &pb.SignalProcessRequest{ContainerId: t.id, ExecId: p.execID, Signal: r.Signal})
	if err != nil && status.Code(err) != codes.NotFound {
		return nil, agentError("signal "+t.id, err)
	}
	if st, _, _ := p.state(); st == task.Status_CREATED {
		go s.waitProcess(context.WithoutCancel(ctx), p)
	}
	return empty(), nil
}

// stopSandboxTask ends the sandbox: the pause task's exit.
func (s *Service) stopSandboxTask(ctx context.Context, p *proc) {
	ctx2, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	s.pod.sb.Stop(ctx2)
	s.exited(ctx, p, 137)
}

// Delete removes a task's process, or the task and its container.
func (s *Service) Delete(ctx context.Context, r *taskAPI.DeleteRequest) (*taskAPI.DeleteResponse, error) {
	t, p, err := s.taskProc(r.ID, r.ExecID)
	if err != nil {
		return nil, err
	}
	st, code, at := p.state()
	if r.ExecID != "" {
		if st != task.Status_STOPPED && st != task.Status_CREATED {
			return nil, errdefs.ToGRPCf(errdefs.ErrFailedPrecondition, "exec %s is running", r.ExecID)
		}
		s.mu.Lock()
		delete(t.execs, r.ExecID)
		s.mu.Unlock()
		return &taskAPI.DeleteResponse{ExitStatus: code, ExitedAt: protobuf.ToTimestamp(at)}, nil
	}
	if t.sandbox {
		if st != task.Status_STOPPED {
			s.stopSandboxTask(ctx, p)
		}
	} else if err := s.removeContainer(ctx, t.id); err != nil {
		return nil, err
	} else {
		s.pod.res.forget(t.id)
	}
	s.exited(ctx, p, 137) // a created task deleted unstarted
	_, code, at = p.state()
	s.mu.Lock()
	delete(s.tasks, t.id)
	s.mu.Unlock()
	pid := uint32(s.pod.sb.Info().Pid)
	s.publish(ctx, runtime.TaskDeleteEventTopic, &eventstypes.TaskDelete{ContainerID: t.id, Pid: pid, ExitStatus: code,
		ExitedAt: protobuf.ToTimestamp(at)})
	return &taskAPI.DeleteResponse{Pid: pid, ExitStatus: code, ExitedAt: protobuf.ToTimestamp(at)}, nil
}

// removeContainer removes a container from the agent. A container the
// agent no longer knows, or whose sandbox is gone, is removed already.
func (s *Service) removeContainer(ctx context.Context, id string) error {
	s.pod.vols.forget(id)
	_, err := s.pod.agent.RemoveContainer(ctx, &pb.RemoveContainerRequest{ContainerId: id, Timeout: 10})
	if err == nil || status.Code(err) == codes.NotFound {
		return nil
	}
	if _, fromAgent := status.FromError(err); !fromAgent {
		// The channel broke: the sandbox is ending (its end may not have
		// been noticed yet).
		select {
		case <-s.pod.sb.Done():
			return nil
		case <-time.After(5 * time.Second):
		}
	}
	return agentError("remove "+id, err)
}

// Wait blocks until the process exits.
func (s *Service) Wait(ctx context.Context, r *taskAPI.WaitRequest) (*taskAPI.WaitResponse, error) {
	_, p, err := s.taskProc(r.ID, r.ExecID)
	if err != nil {
		return nil, err
	}
	select {
	case <-p.exited:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	_, code, at := p.state()
	return &taskAPI.WaitResponse{ExitStatus: code, ExitedAt: protobuf.ToTimestamp(at)}, nil
}

// State reports a process's state.
func (s *Service) State(ctx context.Context, r *taskAPI.StateRequest) (*taskAPI.StateResponse, error) {
	t, p, err := s.taskProc(r.ID, r.ExecID)
	if err != nil {
		return nil, err
	}
	st, code, at := p.state()
	return &taskAPI.StateResponse{ID: t.id, Bundle: t.bundle, Pid: uint32(s.pod.sb.Info().Pid), Status: st,
		Stdin: p.stdio.stdin, Stdout: p.stdio.stdout, Stderr: p.stdio.stderr, Terminal: p.stdio.terminal,
		ExitStatus: code, ExitedAt: protobuf.ToTimestamp(at), ExecID: r.ExecID}, nil
}

// Pids lists the host process standing for the task: the sandbox's.
func (s *Service) Pids(ctx context.Context, r *taskAPI.PidsRequest) (*taskAPI.PidsResponse, error) {
	if _, err := s.task(r.ID); err != nil {
		return nil, err
	}
	return &taskAPI.PidsResponse{Processes: []*task.ProcessInfo{{Pid: uint32(s.pod.sb.Info().Pid)}}}, nil
}

// onAgent calls the pod's agent, naming the step in its error.
func (s *Service) onAgent(step string, call func(pb.AgentServiceService) error) (*ptypes.Empty, error) {
	agent, err := s.agent()
	if err != nil {
		return nil, err
	}
	if err := call(agent); err != nil {
		return nil, agentError(step, err)
	}
	return empty(), nil
}

// Pause freezes a container.
func (s *Service) Pause(ctx context.Context, r *taskAPI.PauseRequest) (*ptypes.Empty, error) {
	return s.onAgent("pause "+r.ID, func(a pb.AgentServiceService) error {
		if _, err := a.PauseContainer(ctx, &pb.PauseContainerRequest{ContainerId: r.ID}); err != nil {
			return err
		}
		s.publish(ctx, runtime.TaskPausedEventTopic, &eventstypes.TaskPaused{ContainerID: r.ID})
		return nil
	})
}

// Resume thaws a container.
func (s *Service) Resume(ctx context.Context, r *taskAPI.ResumeRequest) (*ptypes.Empty, error) {
	return s.onAgent("resume "+r.ID, func(a pb.AgentServiceService) error {
		if _, err := a.ResumeContainer(ctx, &pb.ResumeContainerRequest{ContainerId: r.ID}); err != nil {
			return err
		}
		s.publish(ctx, runtime.TaskResumedEventTopic, &eventstypes.TaskResumed{ContainerID: r.ID})
		return nil
	})
}

// ResizePty resizes a process's terminal.
func (s *Service) ResizePty(ctx context.Context, r *taskAPI.ResizePtyRequest) (*ptypes.Empty, error) {
	return s.onAgent("resize "+r.ID, func(a pb.AgentServiceService) error {
		_, err := a.TtyWinResize(ctx, &pb.TtyWinResizeRequest{ContainerId: r.ID, ExecId: r.ExecID, Row: r.Height, Column: r.Width})
		return err
	})
}

// CloseIO closes a process's stdin once everything written to its stdin
// fifo reached the agent.
func (s *Service) CloseIO(ctx context.Context, r *taskAPI.CloseIORequest) (*ptypes.Empty, error) {
	_, p, err := s.taskProc(r.ID, r.ExecID)
	if err != nil {
		return nil, err
	}
	if p.stdio.stdin != "" {
		if err := p.closeStdin(ctx); err != nil {
			return nil, errdefs.ToGRPCf(errdefs.ErrUnavailable, "close stdin of %s: %v", r.ID, err)
		}
		return empty(), nil
	}
	return s.onAgent("close stdin of "+r.ID, func(a pb.AgentServiceService) error {
		_, err := a.CloseStdin(ctx, &pb.CloseStdinRequest{ContainerId: r.ID, ExecId: r.ExecID})
		return err
	})
}

// Checkpoint is not possible: the host cannot read a confidential guest.
func (s *Service) Checkpoint(ctx context.Context, r *taskAPI.CheckpointTaskRequest) (*ptypes.Empty, error) {
	return nil, errdefs.ToGRPCf(errdefs.ErrNotImplemented, "checkpoint of a confidential container")
}

// Stats reports a container's cgroup statistics from the guest.
func (s *Service) Stats(ctx context.Context, r *taskAPI.StatsRequest) (*taskAPI.StatsResponse, error) {
	agent, err := s.agent()
	if err != nil {
		return nil, err
	}
	st, err := agent.StatsContainer(ctx, &pb.StatsContainerRequest{ContainerId: r.ID})
	if err != nil {
		return nil, agentError("stats of "+r.ID, err)
	}
	any, err := typeurl.MarshalAny(metrics(st.CgroupStats))
	if err != nil {
		return nil, err
	}
	return &taskAPI.StatsResponse{Stats: protobuf.FromAny(any)}, nil
}

// Connect returns the shim's and the sandbox's pids.
func (s *Service) Connect(ctx context.Context, r *taskAPI.ConnectRequest) (*taskAPI.ConnectResponse, error) {
	var pid uint32
	s.mu.Lock()
	if s.pod != nil {
		pid = uint32(s.pod.sb.Info().Pid)
	}
	s.mu.Unlock()
	return &taskAPI.ConnectResponse{ShimPid: uint32(os.Getpid()), TaskPid: pid}, nil
}

// Shutdown ends the shim once it serves no task.
func (s *Service) Shutdown(ctx context.Context, r *taskAPI.ShutdownRequest) (*ptypes.Empty, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.tasks) > 0 {
		return empty(), nil
	}
	if s.pod != nil {
		s.pod.client.Close()
		ctx2, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		s.pod.sb.Stop(ctx2)
		cancel()
		os.RemoveAll(s.pod.dir)
		if err := s.pod.cgroup.leave(); err != nil {
			log.G(ctx).WithError(err).Warn("remove the pod's cgroup")
		}
	}
	// The shim exits once its publisher has delivered every event.
	s.publisher.Close()
	s.shutdown()
	return empty(), nil
}

// Cleanup runs in a new process after the shim died: the sandbox died
// with it (its processes are bound to the shim's life).
func (s *Service) Cleanup(ctx context.Context) (*taskAPI.DeleteResponse, error) {
	os.RemoveAll(stateDir(ctx, s.id))
	if spec, err := readSpec("."); err == nil && (spec.Annotations[annotationSandboxID] == "" ||
		spec.Annotations[annotationContainerType] == containerTypeSandbox) {
		if err := removePodCgroup(spec.Linux); err != nil {
			log.G(ctx).WithError(err).Warn("remove the pod's cgroup")
		}
	}
	return &taskAPI.DeleteResponse{ExitedAt: protobuf.ToTimestamp(time.Now()), ExitStatus: 128 + uint32(syscall.SIGKILL)}, nil
}

// agent is the pod's agent, once the pod exists.
func (s *Service) agent() (pb.AgentServiceService, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.pod == nil {
		return nil, errdefs.ToGRPCf(errdefs.ErrFailedPrecondition, "the pod has no sandbox yet")
	}
	return s.pod.agent, nil
}
