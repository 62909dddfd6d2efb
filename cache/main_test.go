package cache

import (
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/f06cdff9/caddy-affinity-cache/internal/goroutines"
)

// TestMain fails a passing run that leaves a goroutine decouple started
// behind: the handler that starts one waits for it (joinWriter) before it
// returns, and the goroutine cannot end before (it hands its result over
// on an unbuffered channel), so one still there was never waited for.
func TestMain(m *testing.M) {
	code := m.Run()
	if code == 0 {
		if left := goroutines.Left("(*recorder).decouple", 2*time.Second); left != "" {
			fmt.Fprintln(os.Stderr, "FAIL: a client's writer (recorder.decouple) was never waited for:\n"+left)
			code = 1
		}
	}
	os.Exit(code)
}
