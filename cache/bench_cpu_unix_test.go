//go:build unix

package cache

import "syscall"

// processCPU returns the CPU time the process has used (user and
// system, every thread: the collector and ristretto's goroutine too), in
// nanoseconds, or -1 where it cannot be read.
func processCPU() int64 {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return -1
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}
