package testutil

import (
	"syscall"
	"time"
)

// SelfCPU is the user and system CPU time this process has used so far,
// for benchmarks that report CPU per operation.
func SelfCPU() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
