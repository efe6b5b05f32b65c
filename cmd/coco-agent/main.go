// Command coco-agent is Cocoon's guest agent: a ttrpc server speaking the
// subset of Kata Containers' agent API that containerd-shim-coco-v2 uses,
// every request checked against the agent policy. It runs containers with
// runc's libcontainer and starts guest-components (attestation agent,
// confidential data hub) as initdata configures them.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/containerd/ttrpc"
	"github.com/opencontainers/runc/libcontainer"
	_ "github.com/opencontainers/runc/libcontainer/nsenter" // container setup before the Go runtime starts

	"github.com/cocoon-cc/cocoon/agent"
	"github.com/cocoon-cc/cocoon/agent/policy"
	"github.com/cocoon-cc/cocoon/guest/telemetry"
	"github.com/cocoon-cc/cocoon/initdata"
	"github.com/cocoon-cc/cocoon/internal/logging"
	pb "github.com/cocoon-cc/cocoon/protocol/ttrpc/agent"
	"github.com/cocoon-cc/cocoon/runtime/transport"
)

func init() {
	// libcontainer re-executes this binary as "coco-agent init" to set up
	// each container from the inside.
	if len(os.Args) > 1 && os.Args[1] == "init" {
		libcontainer.Init()
	}
}

type flags struct {
	listen, stateDir, initdata, policyFile, binDir, logLevel, hostLoopback, cgroupParent string
	privateMounts, noPivotRoot                                                           bool
	maxUnpackedMiB                                                                       int64
}

func main() {
	var f flags
	flag.StringVar(&f.listen, "listen", "vsock://-1:1024", "where to serve: vsock://-1:PORT, serial:///dev/virtio-ports/NAME, unix:///PATH or fd://N")
	flag.StringVar(&f.stateDir, "state-dir", "/run/cocoon", "containers' bundles and state")
	flag.StringVar(&f.initdata, "initdata", "", "initdata TOML (policy.rego, aa.toml, cdh.toml)")
	flag.StringVar(&f.policyFile, "policy-file", "", "agent policy (Rego), overriding initdata's policy.rego")
	flag.StringVar(&f.binDir, "guest-components", "", "directory of attestation-agent, confidential-data-hub and api-server-rest (default: this binary's)")
	flag.StringVar(&f.logLevel, "log-level", "info", "debug, info, warn or error")
	flag.StringVar(&f.hostLoopback, "host-loopback", "", "address of the host's loopback from the sandbox (10.0.2.2 on QEMU's user network), for images on a registry at 127.0.0.1")
	flag.StringVar(&f.cgroupParent, "cgroup-parent", "", "cgroup of the containers (default /cocoon/<sandbox id>)")
	flag.Int64Var(&f.maxUnpackedMiB, "max-unpacked-size-mib", 0, "what one image pull without a data hub may extract: 0 derives it from the space the layer store has left, -1 lifts it")
	flag.BoolVar(&f.noPivotRoot, "no-pivot-root", false, "enter containers' root with chroot (the guest's initramfs root cannot be pivoted)")
	flag.BoolVar(&f.privateMounts, "private-mounts", false, "local backend: private /proc and tmpfs state directories")
	flag.Parse()
	log := logging.New(os.Stderr, f.logLevel, "text")
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, log, f); err != nil {
		log.Error("coco-agent", "err", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, log *slog.Logger, f flags) error {
	// Read before the private mounts, which may hide the file's directory.
	raw, err := readInitdata(f.initdata)
	if err != nil {
		return err
	}
	if f.privateMounts {
		if err := agent.PrivateMounts(agent.PrivateDirs...); err != nil {
			return err
		}
	}
	engine, err := loadPolicy(ctx, raw, f.policyFile)
	if err != nil {
		return err
	}
	if f.binDir == "" {
		exe, err := os.Executable()
		if err != nil {
			return err
		}
		f.binDir = filepath.Dir(exe)
	}
	gc := &agent.GuestComponents{BinDir: f.binDir, RunDir: filepath.Join(f.stateDir, "guest-components"), Initdata: raw,
		HostLoopback: f.hostLoopback, MaxUnpackedBytes: f.maxUnpackedMiB << 20, Log: log}
	if err := gc.Start(ctx); err != nil {
		return err
	}
	defer gc.Stop()
	// The pod's volumes are where Kata's runtime names them (private
	// directories on the local backend).
	cfg := agent.Config{StateDir: f.stateDir, Images: gc, Volumes: gc, Policy: engine, SetHostname: true,
		NoPivotRoot: f.noPivotRoot, CgroupParent: f.cgroupParent, SharedDir: agent.SharedPath, SandboxDir: agent.SandboxPath,
		ContainerMounts: gc.ContainerMounts(), ContainerEnv: gc.ContainerEnv(), Log: log}
	fd, tcfg := gc.Telemetry()
	if fd != nil {
		cfg.Telemetry = fd
		defer fd.Close()
	}
	a, err := agent.New(cfg)
	if err != nil {
		return err
	}
	if fd != nil && tcfg.Ships(telemetry.Metrics) {
		go fd.RunMetrics(ctx, tcfg.MetricsInterval, a.ContainerStats)
	}
	srv, err := ttrpc.NewServer(ttrpc.WithUnaryServerInterceptor(engine.UnaryInterceptor()))
	if err != nil {
		return err
	}
	a.Register(srv)
	l, err := transport.Listen(ctx, f.listen)
	if err != nil {
		return err
	}
	log.Info("serving", "listen", f.listen, "pid", os.Getpid())
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	err = srv.Serve(ctx, l)
	a.DestroySandbox(context.WithoutCancel(ctx), &pb.DestroySandboxRequest{})
	if err != nil && !errors.Is(err, ttrpc.ErrServerClosed) && ctx.Err() == nil {
		return err
	}
	return nil
}

func readInitdata(path string) ([]byte, error) {
	if path == "" {
		return nil, nil
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, initdata.MaxSize+1))
	if err != nil {
		return nil, err
	}
	if len(b) > initdata.MaxSize {
		return nil, fmt.Errorf("%w: %s is larger than %d bytes", initdata.ErrInvalid, path, initdata.MaxSize)
	}
	return b, nil
}

// loadPolicy picks the policy file, else initdata's policy.rego, else the
// default policy.
func loadPolicy(ctx context.Context, raw []byte, path string) (*policy.Engine, error) {
	text := policy.Default()
	if len(raw) > 0 {
		doc, err := initdata.Parse(raw)
		if err != nil {
			return nil, err
		}
		if p, ok := doc.Data["policy.rego"]; ok {
			text = p
		}
	}
	if path != "" {
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, err
		}
		text = string(b)
	}
	return policy.New(ctx, text)
}
