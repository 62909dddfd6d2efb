//go:build unix && !nommap

package integration

// bodiesMapped reports whether the cache keeps stored bodies in memory it
// maps (Unix systems) rather than on the Go heap (Windows, or a build
// with the nommap tag).
const bodiesMapped = true
