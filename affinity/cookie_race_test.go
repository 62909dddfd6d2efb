//go:build race

package affinity

// Under the race detector sync.Pool drops a share of what is Put, so the
// pooled HMAC states get reallocated and allocation counts mean nothing.
func init() { raceEnabled = true }
