//go:build !unix || nommap

package cache

import "errors"

// bodiesMapped is false: without mmap (Windows, or a build with the
// nommap tag, which tests the Windows way on any system), the arena maps
// nothing and every body lives on the Go heap.
const bodiesMapped = false

func mapChunk(int) ([]byte, error) { return nil, errors.New("no mmap on this platform") }

func unmapChunk([]byte) {}

func releasePages([]byte) {}
