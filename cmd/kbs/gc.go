package main

import (
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// gcPercent is the KBS's GOGC: it allocates many short-lived objects per
// request and keeps few, so a collection finds little to keep and costs
// the same however much garbage it frees. When its guests hold their
// sessions it keeps only bounded caches, and 1000 makes collections rare
// (in BenchmarkRCAR it saved 2% of the KBS's CPU over 400); stored
// sessions pile up in its heap, and 1000 cost as much in page faults as
// it saved in marking while the heap grew to ten times the sessions. The
// memory limit keeps the heap from growing past the memory the KBS may
// use.
func gcPercent(heldSessions bool) int {
	if heldSessions {
		return 1000
	}
	return 400
}

// tuneGC sets GOGC and a soft memory limit of three quarters of the
// memory the KBS may use (its cgroup's limit, else the machine's RAM),
// unless GOGC or GOMEMLIMIT say otherwise.
func tuneGC(heldSessions bool) {
	if os.Getenv("GOGC") != "" {
		return
	}
	debug.SetGCPercent(gcPercent(heldSessions))
	if os.Getenv("GOMEMLIMIT") != "" {
		return
	}
	if avail := memoryAvailable(); avail > 0 {
		debug.SetMemoryLimit(avail / 4 * 3)
	}
}

// memoryAvailable is the cgroup v2 memory limit of the process, or the
// machine's RAM without one; 0 if unknown.
func memoryAvailable() int64 {
	var info unix.Sysinfo_t
	if unix.Sysinfo(&info) != nil {
		return 0
	}
	ram := int64(info.Totalram) * int64(info.Unit)
	if limit := cgroupMemoryMax(); limit > 0 {
		return min(limit, ram)
	}
	return ram
}

// cgroupMemoryMax is memory.max of the process's cgroup (v2: the line
// "0::/path" of /proc/self/cgroup), 0 if there is none or it is "max".
func cgroupMemoryMax() int64 {
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return 0
	}
	for line := range strings.Lines(string(b)) {
		if path, ok := strings.CutPrefix(strings.TrimSpace(line), "0::"); ok {
			v, err := os.ReadFile(filepath.Join("/sys/fs/cgroup", path, "memory.max"))
			if err != nil {
				return 0
			}
			limit, _ := strconv.ParseInt(strings.TrimSpace(string(v)), 10, 64)
			return limit
		}
	}
	return 0
}
