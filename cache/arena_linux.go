//go:build !nommap

package cache

import "golang.org/x/sys/unix"

// smallPages asks the kernel to back b with small pages only. Where
// transparent huge pages are always on, a write would otherwise make
// 2 MiB resident at once, and the kernel's background collapsing would
// make pages given back resident again.
func smallPages(b []byte) { _ = unix.Madvise(b, unix.MADV_NOHUGEPAGE) }
