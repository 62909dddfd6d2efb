//go:build unix

package cache

import "golang.org/x/sys/unix"

// mapChunk maps size bytes of private anonymous memory, outside the Go
// heap.
func mapChunk(size int) ([]byte, error) {
	return unix.Mmap(-1, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE)
}

func unmapChunk(b []byte) { _ = unix.Munmap(b) }

// releasePages tells the kernel the pages of b are not needed: they leave
// the process's RSS and read as zeros when touched again.
func releasePages(b []byte) { _ = unix.Madvise(b, unix.MADV_DONTNEED) }
