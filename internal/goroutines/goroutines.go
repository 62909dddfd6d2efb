// Package goroutines finds goroutines a test run left behind. The cache's
// tests and the integration tests (a real Caddy in process) both check,
// once they have passed, that no client's writer (the cache's
// recorder.decouple) was left unwaited for.
package goroutines

import (
	"runtime"
	"strings"
	"time"
)

// Left returns the stacks of the goroutines with match in them that are
// still there after wait ("" when none is).
func Left(match string, wait time.Duration) string {
	buf := make([]byte, 4<<20)
	deadline := time.Now().Add(wait)
	for {
		var left []string
		for g := range strings.SplitSeq(string(buf[:runtime.Stack(buf, true)]), "\n\n") {
			if strings.Contains(g, match) {
				left = append(left, g)
			}
		}
		if len(left) == 0 || time.Now().After(deadline) {
			return strings.Join(left, "\n\n")
		}
		time.Sleep(50 * time.Millisecond)
	}
}
