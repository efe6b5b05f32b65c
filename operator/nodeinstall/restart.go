package nodeinstall

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	cri "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// ErrRestart is a containerd restart that did not bring it back with the
// expected runtimes.
var ErrRestart = errors.New("containerd restart")

// restartTimeout bounds the wait for containerd to serve again.
const restartTimeout = 2 * time.Minute

// SystemdRestarter restarts containerd's systemd unit in the host's
// namespaces (the installer runs with the host's PID namespace). Stopping
// containerd leaves its shims running (KillMode=process in containerd's
// unit), and containerd re-adopts them when it starts.
type SystemdRestarter struct {
	Unit      string
	Address   string
	Systemctl Systemctl
}

// Restart implements Restarter.
func (r SystemdRestarter) Restart(ctx context.Context, handlers []string) error {
	if err := r.Systemctl.Run(ctx, "restart", r.Unit); err != nil {
		return fmt.Errorf("%w: %w", ErrRestart, err)
	}
	return waitServing(ctx, r.Address, handlers)
}

// SignalRestarter stops the containerd reading ConfigPath with SIGTERM
// (containerd leaves its shims running) and waits for its supervisor to
// start it again.
type SignalRestarter struct {
	ConfigPath string
	Address    string
}

// Restart implements Restarter.
func (r SignalRestarter) Restart(ctx context.Context, handlers []string) error {
	pid, err := findContainerd(r.ConfigPath)
	if err != nil {
		return err
	}
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		return fmt.Errorf("%w: signal containerd %d: %v", ErrRestart, pid, err)
	}
	// The old process must be gone, or its socket would answer the wait.
	deadline := time.Now().Add(restartTimeout)
	for syscall.Kill(pid, 0) == nil {
		if time.Now().After(deadline) {
			return fmt.Errorf("%w: containerd %d did not stop", ErrRestart, pid)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return waitServing(ctx, r.Address, handlers)
}

// findContainerd is the pid of the containerd reading configPath.
func findContainerd(configPath string) (int, error) {
	for pid, args := range processes() {
		if filepath.Base(args[0]) == "containerd" && readsConfig(args, configPath) {
			return pid, nil
		}
	}
	return 0, fmt.Errorf("%w: no containerd process reads %s", ErrRestart, configPath)
}

// readsConfig says whether containerd's arguments name configPath, or
// name none and configPath is containerd's default.
func readsConfig(args []string, configPath string) bool {
	named := false
	for i, a := range args {
		if a == "--config="+configPath || (i > 0 && (args[i-1] == "--config" || args[i-1] == "-c") && a == configPath) {
			return true
		}
		named = named || a == "--config" || a == "-c" || strings.HasPrefix(a, "--config=")
	}
	return !named && configPath == defaultConfig
}

// defaultConfig is the configuration containerd reads without --config.
const defaultConfig = "/etc/containerd/config.toml"

// waitServing waits until containerd's CRI answers at address and knows
// every handler.
func waitServing(ctx context.Context, address string, handlers []string) error {
	ctx, cancel := context.WithTimeout(ctx, restartTimeout)
	defer cancel()
	conn, err := grpc.NewClient("unix://"+address, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return fmt.Errorf("%w: %v", ErrRestart, err)
	}
	defer conn.Close()
	client := cri.NewRuntimeServiceClient(conn)
	var last error
	for {
		last = runtimesServed(ctx, client, handlers)
		if last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: containerd at %s: %v", ErrRestart, address, last)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// runtimesServed checks the runtimes of the CRI configuration containerd
// reports (verbose status; containerd 1.6 fills no runtime_handlers).
func runtimesServed(ctx context.Context, client cri.RuntimeServiceClient, handlers []string) error {
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	st, err := client.Status(cctx, &cri.StatusRequest{Verbose: true})
	if err != nil {
		return err
	}
	var cfg struct {
		Containerd struct {
			Runtimes map[string]json.RawMessage `json:"runtimes"`
		} `json:"containerd"`
	}
	if err := json.Unmarshal([]byte(st.GetInfo()["config"]), &cfg); err != nil {
		return fmt.Errorf("CRI status config: %v", err)
	}
	for _, h := range handlers {
		if _, ok := cfg.Containerd.Runtimes[h]; !ok {
			return fmt.Errorf("runtime %s not served", h)
		}
	}
	return nil
}
