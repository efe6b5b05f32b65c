package qemu

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/cocoon-cc/cocoon/runtime/sandbox"
)

// A VM boots with the pod's known size and grows when containers ask for
// more (Kata's model): vCPUs are hot-plugged as CPU devices (-smp
// N,maxcpus=M), memory as pc-dimm devices backed by RAM (-m N,slots,maxmem),
// both over QMP; the agent brings them online (OnlineCPUMem). Confidential
// guests (SNP, TDX) cannot grow: their vCPUs and memory are part of the
// launch, so they are sized at boot only.

// memBlockMiB is the x86-64 guest kernel's memory block size below 64 GiB
// of RAM: hot-plugged memory comes in whole blocks.
const memBlockMiB = 128

// memorySlots is how many times a VM's memory can grow (Kata's default
// memory_slots is 10).
const memorySlots = 10

// hotplug says whether this VM can grow after boot.
func (s *Sandbox) hotplug() bool { return s.opts.TEE == "none" }

// sizeDefaults fills the size and its bounds: at most the host's CPUs and
// memory, as Kata's default_maxvcpus and default_maxmemory.
func sizeDefaults(cfg *sandbox.Config) {
	if cfg.MemoryMiB == 0 {
		cfg.MemoryMiB = DefaultMemoryMiB
	}
	if cfg.VCPUs == 0 {
		cfg.VCPUs = DefaultVCPUs
	}
	if cfg.MaxVCPUs == 0 {
		cfg.MaxVCPUs = runtime.NumCPU()
	}
	if cfg.MaxMemoryMiB == 0 {
		cfg.MaxMemoryMiB = hostMemoryMiB()
	}
	cfg.MaxVCPUs = max(cfg.MaxVCPUs, cfg.VCPUs)
	cfg.MaxMemoryMiB = max(cfg.MaxMemoryMiB, cfg.MemoryMiB)
}

// hostMemoryMiB is the host's RAM (MemTotal), 0 if unknown.
func hostMemoryMiB() int {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "MemTotal:"); ok {
			if f := strings.Fields(v); len(f) > 0 {
				kib, _ := strconv.Atoi(f[0])
				return kib >> 10
			}
		}
	}
	return 0
}

// sizeArgs are -smp and -m: with room to grow when the VM can.
func (s *Sandbox) sizeArgs() []string {
	c := s.cfg
	smp, mem := strconv.Itoa(c.VCPUs), strconv.Itoa(c.MemoryMiB)
	if s.hotplug() {
		smp += ",maxcpus=" + strconv.Itoa(c.MaxVCPUs)
		if c.MaxMemoryMiB > c.MemoryMiB {
			mem += "M,slots=" + strconv.Itoa(memorySlots) + ",maxmem=" + strconv.Itoa(c.MaxMemoryMiB) + "M"
		}
	}
	return []string{"-smp", smp, "-m", mem}
}

// kernelParams are the configured kernel parameters, and for a VM that
// can grow swiotlb=noforce: its hotplug memory range lies above 4 GiB, for
// which the kernel would otherwise keep a 64 MiB bounce buffer that virtio
// devices never use (a quarter of the default guest).
func (s *Sandbox) kernelParams() string {
	if !s.hotplug() {
		return s.opts.KernelParams
	}
	return strings.TrimSpace("swiotlb=noforce noreplace-smp " + s.opts.KernelParams)
}

// Size is the VM's current vCPUs and memory.
func (s *Sandbox) Size() (vcpus, memoryMiB int) {
	s.sizeMu.Lock()
	defer s.sizeMu.Unlock()
	return s.cfg.VCPUs, s.cfg.MemoryMiB
}

// Resize grows the VM to at least vcpus and memoryMiB, within its bounds
// (never shrinks: memory cannot be taken back from a running guest
// safely), and returns its size. The guest still has to bring what was
// added online (the agent's OnlineCPUMem).
func (s *Sandbox) Resize(ctx context.Context, vcpus, memoryMiB int) (int, int, error) {
	s.sizeMu.Lock()
	defer s.sizeMu.Unlock()
	c := &s.cfg
	vcpus, memoryMiB = min(vcpus, c.MaxVCPUs), min(memoryMiB, c.MaxMemoryMiB)
	addMiB := 0
	if memoryMiB > c.MemoryMiB {
		// Whole memory blocks, within maxmem.
		addMiB = (memoryMiB - c.MemoryMiB + memBlockMiB - 1) / memBlockMiB * memBlockMiB
		addMiB = min(addMiB, (c.MaxMemoryMiB-c.MemoryMiB)/memBlockMiB*memBlockMiB)
	}
	if vcpus <= c.VCPUs && addMiB == 0 {
		return c.VCPUs, c.MemoryMiB, nil
	}
	if !s.hotplug() {
		return c.VCPUs, c.MemoryMiB, fmt.Errorf("%w: a %s guest is sized at boot", sandbox.ErrNoHotplug, s.opts.TEE)
	}
	q, err := dialQMP(ctx, s.path("qmp.sock"))
	if err != nil {
		return c.VCPUs, c.MemoryMiB, err
	}
	defer q.Close()
	if addMiB > 0 {
		if err := s.plugMemory(ctx, q, addMiB); err != nil {
			return c.VCPUs, c.MemoryMiB, err
		}
	}
	if vcpus > c.VCPUs {
		if err := s.plugCPUs(ctx, q, vcpus-c.VCPUs); err != nil {
			return c.VCPUs, c.MemoryMiB, err
		}
	}
	return c.VCPUs, c.MemoryMiB, nil
}

// plugMemory adds one DIMM of mib MiB.
func (s *Sandbox) plugMemory(ctx context.Context, q *qmp, mib int) error {
	if s.dimms == memorySlots {
		return fmt.Errorf("%w: all %d memory slots are used", sandbox.ErrNoHotplug, memorySlots)
	}
	id := strconv.Itoa(s.dimms)
	if err := q.run(ctx, "object-add", map[string]any{"qom-type": "memory-backend-ram", "id": "mem" + id,
		"size": uint64(mib) << 20}, nil); err != nil {
		return err
	}
	if err := q.run(ctx, "device_add", map[string]any{"driver": "pc-dimm", "id": "dimm" + id, "memdev": "mem" + id}, nil); err != nil {
		q.run(ctx, "object-del", map[string]any{"id": "mem" + id}, nil)
		return err
	}
	s.dimms++
	s.cfg.MemoryMiB += mib
	return nil
}

// hotpluggableCPU is an entry of query-hotpluggable-cpus.
type hotpluggableCPU struct {
	Type    string         `json:"type"`
	Props   map[string]any `json:"props"`
	QOMPath string         `json:"qom-path"`
}

// plugCPUs adds n vCPUs in the lowest free sockets.
func (s *Sandbox) plugCPUs(ctx context.Context, q *qmp, n int) error {
	var slots []hotpluggableCPU
	if err := q.run(ctx, "query-hotpluggable-cpus", nil, &slots); err != nil {
		return err
	}
	var free []hotpluggableCPU
	for _, c := range slots {
		if c.QOMPath == "" {
			free = append(free, c)
		}
	}
	// In topology order: QEMU lists them last first.
	topo := func(c hotpluggableCPU) (k [4]float64) {
		for i, p := range []string{"socket-id", "die-id", "core-id", "thread-id"} {
			k[i], _ = c.Props[p].(float64)
		}
		return k
	}
	sort.Slice(free, func(i, j int) bool {
		a, b := topo(free[i]), topo(free[j])
		return slices.Compare(a[:], b[:]) < 0
	})
	for _, c := range free[:min(n, len(free))] {
		args := map[string]any{"driver": c.Type, "id": fmt.Sprintf("cpu%d", s.cfg.VCPUs)}
		for k, v := range c.Props {
			args[k] = v
		}
		if err := q.run(ctx, "device_add", args, nil); err != nil {
			return err
		}
		s.cfg.VCPUs++
	}
	return nil
}
