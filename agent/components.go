package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"time"

	"github.com/containerd/ttrpc"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/cocoon-cc/cocoon/guest/cdh/config"
	"github.com/cocoon-cc/cocoon/guest/cdh/securemount"
	"github.com/cocoon-cc/cocoon/guest/mesh"
	"github.com/cocoon-cc/cocoon/guest/spiffe"
	"github.com/cocoon-cc/cocoon/guest/telemetry"
	"github.com/cocoon-cc/cocoon/guest/telemetry/feed"
	"github.com/cocoon-cc/cocoon/image/pull"
	"github.com/cocoon-cc/cocoon/image/store"
	"github.com/cocoon-cc/cocoon/initdata"
	"github.com/cocoon-cc/cocoon/kbs/svid"
	cdhpb "github.com/cocoon-cc/cocoon/protocol/ttrpc/cdh"
)

// GuestComponents runs guest-components beside the agent: the attestation
// agent and the confidential data hub, configured by initdata's aa.toml and
// cdh.toml, and the REST API server containers reach them by. Images are
// pulled through the data hub, which holds the keys of encrypted layers.
type GuestComponents struct {
	// BinDir holds attestation-agent, confidential-data-hub and
	// api-server-rest.
	BinDir string
	// RunDir receives the configuration files (a tmpfs in the guest).
	RunDir string
	// Initdata is the raw initdata TOML, empty for none.
	Initdata []byte
	// HostLoopback is where the sandbox reaches the host's loopback
	// (10.0.2.2 on QEMU's user network): images on a registry at 127.0.0.1
	// or localhost on the host are pulled from there, under their name.
	HostLoopback string
	// MaxUnpackedBytes bounds what one image pull extracts when the agent
	// pulls without a data hub (pull.Options.MaxBytes; the data hub reads
	// cdh.toml's [image] max_unpacked_size_mib).
	MaxUnpackedBytes int64
	Log              *slog.Logger

	cdhSocket   string
	workloadDir string // the SPIFFE Workload API socket's, "" without one
	telemetry   *telemetry.Config
	feed        *feed.Feed
	images      string // work dir of the in-process puller (no data hub)
	mu          sync.Mutex
	procs       []*exec.Cmd
}

// ErrNoKBS is returned for an encrypted image in a sandbox whose initdata
// names no KBS: nothing could release its key.
var ErrNoKBS = errors.New("no KBS configured in initdata (cdh.toml): only plain images can be pulled")

// Start launches the components initdata configures. Without a cdh.toml
// there is no KBS to attest to: images are pulled in-process, plain only.
func (g *GuestComponents) Start(ctx context.Context) error {
	var data map[string]string
	if len(g.Initdata) > 0 {
		doc, err := initdata.Parse(g.Initdata)
		if err != nil {
			return err
		}
		data = doc.Data
	}
	if err := os.MkdirAll(g.RunDir, 0o700); err != nil {
		return err
	}
	g.images = filepath.Join(g.RunDir, "images")
	cdhToml, ok := data["cdh.toml"]
	if !ok {
		g.Log.Info("initdata has no cdh.toml: no attestation, plain images only")
		if _, ok := data[svid.InitdataKey]; ok {
			g.Log.Warn("initdata names a SPIFFE ID but no KBS (cdh.toml): no Workload API")
		}
		if _, ok := data[telemetry.InitdataKey]; ok {
			return fmt.Errorf("initdata has %s but no cdh.toml: the owner's endpoint needs the pod's SVID", telemetry.InitdataKey)
		}
		return nil
	}
	cfg, err := config.Parse([]byte(cdhToml))
	if err != nil {
		return fmt.Errorf("initdata cdh.toml: %w", err)
	}
	aaArgs := []string{"-a", cfg.AA.Socket}
	var initdataPath string
	if len(g.Initdata) > 0 {
		if initdataPath, err = g.write("initdata.toml", string(g.Initdata)); err != nil {
			return err
		}
		aaArgs = append(aaArgs, "-t", initdataPath)
	}
	if aaToml, ok := data["aa.toml"]; ok {
		path, err := g.write("aa.toml", aaToml)
		if err != nil {
			return err
		}
		aaArgs = append(aaArgs, "-c", path)
	}
	if err := g.run(ctx, "attestation-agent", aaArgs...); err != nil {
		return err
	}
	if err := waitSocket(ctx, config.SocketPath(cfg.AA.Socket)); err != nil {
		return fmt.Errorf("attestation-agent: %w", err)
	}
	path, err := g.write("cdh.toml", cdhToml)
	if err != nil {
		return err
	}
	if err := g.run(ctx, "confidential-data-hub", "-c", path); err != nil {
		return err
	}
	g.cdhSocket = config.SocketPath(cfg.Socket)
	if err := waitSocket(ctx, g.cdhSocket); err != nil {
		return fmt.Errorf("confidential-data-hub: %w", err)
	}
	if err := g.run(ctx, "api-server-rest", "--features", "all", "--cdh_addr", cfg.Socket, "--aa_addr", cfg.AA.Socket); err != nil {
		return err
	}
	if _, ok := data[svid.InitdataKey]; ok {
		return g.startWorkloadAPI(ctx, path, initdataPath, data)
	}
	for _, key := range []string{mesh.InitdataKey, telemetry.InitdataKey} {
		if _, ok := data[key]; ok {
			return fmt.Errorf("initdata has %s but no %s: it needs the pod's SVID", key, svid.InitdataKey)
		}
	}
	return nil
}

// startWorkloadAPI runs the SPIFFE Workload API server for the ID
// initdata's spiffe.toml names; its socket's directory is mounted into
// every container. With a mesh.toml in initdata's data it also runs the
// pod's mTLS mesh (the containers share the guest's network namespace, so
// its redirects cover them all), with a telemetry.toml the shipper.
func (g *GuestComponents) startWorkloadAPI(ctx context.Context, cdhConfig, initdataPath string, data map[string]string) error {
	dir := filepath.Join(g.RunDir, "spiffe")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	socket := filepath.Join(dir, spiffe.SocketName)
	args := []string{"-c", cdhConfig, "--initdata", initdataPath, "--socket", socket}
	if _, ok := data[mesh.InitdataKey]; ok {
		args = append(args, "--mesh")
	}
	var tcfg *telemetry.Config
	telemetrySocket := filepath.Join(g.RunDir, "telemetry.sock")
	text, telemetryOn := data[telemetry.InitdataKey]
	if telemetryOn {
		var err error
		if tcfg, err = telemetry.ParseConfig(text); err != nil {
			return fmt.Errorf("initdata's %s: %w", telemetry.InitdataKey, err)
		}
		args = append(args, "--telemetry", telemetrySocket)
	}
	if err := g.run(ctx, "spiffe-workload-api", args...); err != nil {
		return err
	}
	if err := waitSocket(ctx, socket); err != nil {
		return fmt.Errorf("spiffe-workload-api: %w", err)
	}
	g.workloadDir = dir
	if telemetryOn {
		return g.startFeed(ctx, tcfg, telemetrySocket)
	}
	return nil
}

// startFeed connects the agent to the telemetry shipper.
func (g *GuestComponents) startFeed(ctx context.Context, cfg *telemetry.Config, socket string) error {
	if err := waitSocket(ctx, socket); err != nil {
		return fmt.Errorf("spiffe-workload-api --telemetry: %w", err)
	}
	f, err := feed.Dial(socket, cfg.Endpoint, g.Log)
	if err != nil {
		return err
	}
	g.telemetry, g.feed = cfg, f
	return nil
}

// Telemetry is the agent's side of the pod's telemetry and its
// configuration, nil when initdata has no telemetry.toml.
func (g *GuestComponents) Telemetry() (*feed.Feed, *telemetry.Config) { return g.feed, g.telemetry }

// ContainerMounts are the guest's mounts for every container: the SPIFFE
// Workload API's socket directory, read-only, when initdata names an ID.
func (g *GuestComponents) ContainerMounts() []specs.Mount {
	if g.workloadDir == "" {
		return nil
	}
	return []specs.Mount{{Destination: spiffe.ContainerSocketDir, Type: "bind", Source: g.workloadDir,
		Options: []string{"rbind", "ro", "nosuid", "nodev", "noexec"}}}
}

// ContainerEnv is the environment the guest gives every container: where
// go-spiffe clients find the Workload API.
func (g *GuestComponents) ContainerEnv() []string {
	if g.workloadDir == "" {
		return nil
	}
	return []string{spiffe.EndpointEnv + "=unix://" + spiffe.ContainerSocketDir + "/" + spiffe.SocketName}
}

func (g *GuestComponents) write(name, text string) (string, error) {
	path := filepath.Join(g.RunDir, name)
	return path, os.WriteFile(path, []byte(text), 0o600)
}

// run starts a component; it logs to the agent's stderr and lives as long
// as the agent.
func (g *GuestComponents) run(ctx context.Context, name string, args ...string) error {
	cmd := exec.Command(filepath.Join(g.BinDir, name), args...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	cmd.Env = append(os.Environ(), "COCOON_HOST_LOOPBACK="+g.HostLoopback)
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", name, err)
	}
	g.mu.Lock()
	g.procs = append(g.procs, cmd)
	g.mu.Unlock()
	go func() {
		err := cmd.Wait()
		g.Log.Warn("guest component exited", "component", name, "err", err)
	}()
	return nil
}

// waitSocket waits for a component to listen.
func waitSocket(ctx context.Context, path string) error {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	for {
		c, err := net.Dial("unix", path)
		if err == nil {
			return c.Close()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("not listening on %s: %w", path, err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Stop ends the components.
func (g *GuestComponents) Stop() {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, cmd := range g.procs {
		cmd.Process.Kill()
	}
}

// PullImage pulls through the data hub, or in-process without one.
func (g *GuestComponents) PullImage(ctx context.Context, ref, bundleDir string) error {
	if g.cdhSocket == "" {
		return g.pullLocal(ctx, ref, bundleDir)
	}
	client, err := g.dialCDH()
	if err != nil {
		return err
	}
	defer client.Close()
	_, err = cdhpb.NewImagePullServiceClient(client).PullImage(ctx, &cdhpb.ImagePullRequest{ImageUrl: ref, BundlePath: bundleDir})
	return err
}

// dialCDH connects to the data hub.
func (g *GuestComponents) dialCDH() (*ttrpc.Client, error) {
	conn, err := net.Dial("unix", g.cdhSocket)
	if err != nil {
		return nil, fmt.Errorf("confidential-data-hub: %w", err)
	}
	return ttrpc.NewClient(conn), nil
}

// SecureMount opens an encrypted volume through the data hub, which holds
// the KBS's keys. Without one (no cdh.toml) only a volume with a key made
// up in the guest can be opened, in-process.
func (g *GuestComponents) SecureMount(ctx context.Context, r *securemount.Request) error {
	if g.cdhSocket == "" {
		if r.Options["key"] != "" {
			return fmt.Errorf("%w: no KBS configured in initdata (cdh.toml) to release volume key %s", ErrUnsupported, r.Options["key"])
		}
		return (&securemount.Mounter{}).Mount(ctx, r)
	}
	client, err := g.dialCDH()
	if err != nil {
		return err
	}
	defer client.Close()
	_, err = cdhpb.NewSecureMountServiceClient(client).SecureMount(ctx, &cdhpb.SecureMountRequest{
		VolumeType: r.VolumeType, Options: r.Options, Flags: r.Flags, MountPoint: r.MountPoint})
	return err
}

func (g *GuestComponents) pullLocal(ctx context.Context, ref, bundleDir string) error {
	st, err := store.Open(g.images)
	if err != nil {
		return err
	}
	_, err = pull.New(st, pull.Options{HostLoopback: g.HostLoopback, MaxBytes: g.MaxUnpackedBytes}).Pull(ctx, ref, bundleDir)
	if errors.Is(err, pull.ErrNoUnwrapper) {
		return fmt.Errorf("%w: %w", ErrNoKBS, err)
	}
	return err
}
