//go:build unix && !nommap

package cache

import "golang.org/x/sys/unix"

// bodiesMapped reports whether stored bodies live in memory the arena
// maps (true on Unix systems, unless built with the nommap tag, which
// builds the Windows way for tests: bodies on the Go heap).
const bodiesMapped = true

// mapChunk maps size bytes of private anonymous memory, outside the Go
// heap, in small pages.
func mapChunk(size int) ([]byte, error) {
	b, err := unix.Mmap(-1, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE)
	if err == nil {
		smallPages(b)
	}
	return b, err
}

func unmapChunk(b []byte) { _ = unix.Munmap(b) }

// releasePages tells the kernel the pages of b are not needed: they leave
// the process's RSS and read as zeros when touched again.
func releasePages(b []byte) { _ = unix.Madvise(b, unix.MADV_DONTNEED) }
