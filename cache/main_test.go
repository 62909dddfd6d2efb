package cache

import (
	"fmt"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"
)

// TestMain fails a passing run that leaves a goroutine decouple started
// behind: the handler that starts one waits for it (joinWriter) before it
// returns, and the goroutine cannot end before (it hands its result over
// on an unbuffered channel), so one still there was never waited for.
func TestMain(m *testing.M) {
	code := m.Run()
	if code == 0 {
		if left := goroutinesLeft("(*recorder).decouple", 2*time.Second); left != "" {
			fmt.Fprintln(os.Stderr, "FAIL: a client's writer (recorder.decouple) was never waited for:\n"+left)
			code = 1
		}
	}
	os.Exit(code)
}

// goroutinesLeft returns the stacks of the goroutines with match in them
// that are still there after wait.
func goroutinesLeft(match string, wait time.Duration) string {
	buf := make([]byte, 4<<20)
	deadline := time.Now().Add(wait)
	for {
		var left []string
		stacks := string(buf[:runtime.Stack(buf, true)])
		for g := range strings.SplitSeq(stacks, "\n\n") {
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
