// Package sandbox defines the isolation boundary a pod runs in: a VM with a
// coco-agent inside (qemu backend) or, for development and tests, plain
// namespaces on the host (local backend). The shim holds one Sandbox per pod
// and talks to the agent inside it over connections from Dial.
package sandbox

import (
	"context"
	"errors"
	"net"
)

// Sandbox is one pod's boundary with a running coco-agent inside.
type Sandbox interface {
	// Start launches the sandbox and returns once the agent answers on its
	// channel, or with an error (and nothing left running) once ctx ends.
	Start(ctx context.Context) error
	// Dial opens a new connection to the agent's ttrpc server.
	Dial(ctx context.Context) (net.Conn, error)
	// Stop ends the sandbox, forcefully once ctx ends, and releases every
	// process, mount and file it created. Stop is idempotent.
	Stop(ctx context.Context) error
	// Done is closed when the sandbox has ended, by Stop or by itself (VM
	// crash, agent exit); Err then says why (nil after a clean Stop).
	Done() <-chan struct{}
	Err() error
	// Info describes the sandbox for logs, metrics and the shim's state.
	Info() Info
}

// Info is what a backend reports about a started sandbox.
type Info struct {
	Backend string // "qemu" or "local"
	// TEE is the hardware TEE the agent runs in ("snp", "tdx") or "none".
	TEE string
	// Confidential is false for backends whose memory the host can read;
	// the shim logs a warning for every pod started that way.
	Confidential bool
	// Pid is the host process holding the sandbox (QEMU, or the local agent).
	Pid int
}

// Config is what every backend needs to create a sandbox.
type Config struct {
	// ID is the pod sandbox id (containerd's io.kubernetes.cri.sandbox-id).
	ID string
	// StateDir is a private, existing directory for the backend's sockets,
	// logs and disks; removed by the caller after Stop.
	StateDir string
	// Initdata is the raw initdata TOML (DESIGN.md section 6), empty for none.
	// Backends deliver it to the agent before the agent serves any request
	// and, in TEE modes, bind its digest into the launch (HOST_DATA,
	// MRCONFIGID).
	Initdata []byte
	// MemoryMiB and VCPUs size VM backends at boot; zero picks the backend
	// default.
	MemoryMiB int
	VCPUs     int
	// MaxMemoryMiB and MaxVCPUs bound what a VM can grow to by hotplug;
	// zero picks the backend default (the host's memory and CPUs).
	MaxMemoryMiB int
	MaxVCPUs     int
	// NetNS is the pod's network namespace, which CNI prepared (CRI's
	// sandbox spec names it); empty for a pod without one (host network,
	// ctr). VM backends attach the VM to it (runtime/network).
	NetNS string
}

// ErrAgentUnreachable is wrapped by Start and Dial when the agent does not
// answer on its channel in time.
var ErrAgentUnreachable = errors.New("sandbox: agent unreachable")

// ErrNoHotplug is wrapped by a Resize the sandbox cannot do: confidential
// guests are sized at boot, and a VM's memory slots are few.
var ErrNoHotplug = errors.New("sandbox: cannot grow")
