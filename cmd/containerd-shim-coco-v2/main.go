// Command containerd-shim-coco-v2 is Cocoon's containerd runtime v2 shim
// (runtime type io.containerd.coco.v2): each pod runs in its own sandbox,
// its images pulled and its containers run by coco-agent inside.
package main

import (
	"context"

	"github.com/containerd/containerd/runtime/v2/shim"

	"github.com/cocoon-cc/cocoon/runtime/sandbox"
	"github.com/cocoon-cc/cocoon/runtime/sandbox/local"
	"github.com/cocoon-cc/cocoon/runtime/sandbox/qemu"
	cocoshim "github.com/cocoon-cc/cocoon/runtime/shim"
)

// backends are the sandbox backends this shim offers, by their name in
// the configuration's [sandbox] backend.
var backends = map[string]cocoshim.Factory{
	"local": func(ctx context.Context, cfg sandbox.Config, c *cocoshim.Config) (sandbox.Sandbox, error) {
		var o local.Options
		if err := c.Decode("local", &o); err != nil {
			return nil, err
		}
		return local.New(cfg, o)
	},
	"qemu": func(ctx context.Context, cfg sandbox.Config, c *cocoshim.Config) (sandbox.Sandbox, error) {
		var o qemu.Options
		if err := c.Decode("qemu", &o); err != nil {
			return nil, err
		}
		return qemu.New(cfg, o)
	},
}

func main() {
	// The sandboxes' processes (agent, VM) are the shim's children, waited
	// for by their backends: containerd's reaper must not take their exits.
	shim.Run("io.containerd.coco.v2", cocoshim.New(backends), func(c *shim.Config) {
		c.NoReaper, c.NoSubreaper = true, true
	})
}
