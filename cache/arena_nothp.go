//go:build unix && !linux && !nommap

package cache

// smallPages is a no-op: only Linux has transparent huge pages.
func smallPages([]byte) {}
