//go:build !unix

package cache

import "errors"

// Without mmap, the arena maps nothing and every body lives on the Go
// heap.
func mapChunk(int) ([]byte, error) { return nil, errors.New("no mmap on this platform") }

func unmapChunk([]byte) {}

func releasePages([]byte) {}
