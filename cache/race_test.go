//go:build race

package cache

// Under the race detector sync.Pool drops a share of what is Put (ristretto
// pools its read buffers), so allocation counts on the hit path vary from
// run to run and mean nothing.
func init() { raceEnabled = true }
