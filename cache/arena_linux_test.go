//go:build !nommap

package cache

import (
	"math"
	"math/rand/v2"
	"os"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// residentBytes is how much of the arena's mapped memory is in the
// process's RSS, page by page, as the kernel reports it (mincore).
func residentBytes(t *testing.T, a *arena) int64 {
	t.Helper()
	a.mu.Lock()
	defer a.mu.Unlock()
	var n int64
	for _, in := range kernelPages(t, a) {
		if in {
			n += int64(os.Getpagesize())
		}
	}
	return n
}

// kernelPages is, per arena page (of the system's page size), whether the
// kernel holds it resident (mincore).
func kernelPages(t *testing.T, a *arena) []bool {
	t.Helper()
	page := os.Getpagesize()
	var out []bool
	for _, c := range a.chunks {
		vec := make([]byte, (len(c)+page-1)/page)
		_, _, errno := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(unsafe.SliceData(c))), uintptr(len(c)), uintptr(unsafe.Pointer(unsafe.SliceData(vec))))
		if errno != 0 {
			t.Fatalf("mincore: %v", errno)
		}
		for _, v := range vec {
			out = append(out, v&1 != 0)
		}
	}
	return out
}

// TestArenaResidentMemory stores bodies into a 64 MiB arena as a full
// cache would: each new body evicts random others until the bodies fit
// in max_size again, ten times max_size in all, and then reads what the
// kernel holds resident. With sizes from 1 KiB to 8 MiB (log-uniform),
// the buddy allocator leaves free blocks between used ones in most
// chunks, which stayed resident (69 of 80 MiB mapped, for 56.6 MiB of
// bodies, before free pages were given back); they must now take at
// most the arena's slack (an eighth of max_size) beyond the blocks in
// use, and a little for the free parts of pages partly in use. Bodies of
// one size reuse each other's blocks: nothing may be given back, which
// would cost page faults for nothing.
func TestArenaResidentMemory(t *testing.T) {
	const maxCost = 64 << 20
	tests := []struct {
		name         string
		size         func(*rand.Rand) int
		givesBack    bool
		residentOver int64 // the most resident may exceed used by
	}{
		{"1 KiB to 8 MiB", logUniform, true, maxCost/8 + 1<<20},
		{"100 KiB", func(*rand.Rand) int { return 100 << 10 }, false, 0},
		{"1 KiB", func(*rand.Rand) int { return 1 << 10 }, false, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := newArena(maxCost)
			t.Cleanup(a.close)
			live := churn(a, maxCost, tt.size)
			st := a.stats()
			got := residentBytes(t, a)
			t.Logf("%d bodies held; arena mapped %.1f MiB, used %.1f MiB, resident %.1f MiB (accounted %.1f MiB), %.1f MiB given back in all",
				len(live), inMiB(st.Mapped), inMiB(st.Used), inMiB(got), inMiB(st.Resident), inMiB(int64(st.Released)))
			if got > st.Resident {
				t.Errorf("the kernel holds %d bytes resident, more than the %d the arena accounts for", got, st.Resident)
			}
			if got > st.Used+tt.residentOver {
				t.Errorf("resident %.1f MiB, want at most used + %.1f MiB = %.1f MiB", inMiB(got), inMiB(tt.residentOver), inMiB(st.Used+tt.residentOver))
			}
			if gave := st.Released > 0; gave != tt.givesBack {
				t.Errorf("gave back %d bytes; want some: %v", st.Released, tt.givesBack)
			}
			for _, ss := range live {
				a.free(ss)
			}
			if got := residentBytes(t, a); got > a.slack {
				t.Errorf("with every body freed, %.1f MiB stay resident, want at most the slack, %.1f MiB", inMiB(got), inMiB(a.slack))
			}
		})
	}
}

// logUniform is a body size from 1 KiB to 8 MiB, log-uniform.
func logUniform(rng *rand.Rand) int {
	return int(math.Exp(math.Log(1<<10) + rng.Float64()*(math.Log(8<<20)-math.Log(1<<10))))
}

// churn stores bodies of the sizes size gives into a as a full cache of
// maxCost would: each new body evicts random others until the bodies fit
// again, ten times maxCost in all; it returns the bodies held.
func churn(a *arena, maxCost int64, size func(*rand.Rand) int) [][]span {
	rng := rand.New(rand.NewPCG(3, 4))
	var live [][]span
	var used, written int64
	for written < 10*maxCost {
		n := size(rng)
		for used+int64(n) > maxCost && len(live) > 0 {
			i := rng.IntN(len(live))
			used -= spanCost(live[i])
			a.free(live[i])
			live[i] = live[len(live)-1]
			live = live[:len(live)-1]
		}
		ss, ok := a.appendAlloc(nil, n, true)
		if !ok {
			continue
		}
		for _, s := range ss {
			for j := 0; j < len(s.b); j += minBlock {
				s.b[j] = 1 // as a body written there would
			}
		}
		live = append(live, ss)
		used += spanCost(ss)
		written += int64(n)
	}
	return live
}

// TestArenaTrimGivesBackFreePages: after a churn of mixed sizes, the
// free pages kept for the next bodies (up to an eighth of max_size) are
// given back by trim, half of those over the floor while blocks are
// being allocated, then down to the floor (a sixty-fourth) once none
// were: RSS after a fill comes down to the bodies held (anonymous memory
// 10 s after a mixed fill: 1.19x and 1.12x max_size over idle, of which
// 8 MiB of a 64 MiB cache were such pages).
func TestArenaTrimGivesBackFreePages(t *testing.T) {
	const maxCost = 64 << 20
	a := newArena(maxCost)
	a.trimEvery = time.Hour // trimmed here, not by the timer
	t.Cleanup(a.close)
	live := churn(a, maxCost, logUniform)
	kept, floor := keptWhole(a), a.trimFloor()
	if kept <= floor+(1<<20) {
		t.Fatalf("%.1f MiB of free pages kept after the churn, want more than the floor, %.1f MiB, to trim", inMiB(kept), inMiB(floor))
	}
	a.trim()
	if got, most := keptWhole(a), floor+(kept-floor)/2; got > most || got < most-a.pageBytes() {
		t.Errorf("after a trim that followed allocations, %.1f MiB kept, want half of what was over the floor given back: %.1f MiB", inMiB(got), inMiB(most))
	}
	a.trim()
	if got := keptWhole(a); got > floor || got < floor-a.pageBytes() {
		t.Errorf("after a trim with no allocation since the last, %.2f MiB kept, want the floor, %.2f MiB", inMiB(got), inMiB(floor))
	}
	st := a.stats()
	got := residentBytes(t, a)
	if got > st.Resident {
		t.Errorf("the kernel holds %d bytes resident, more than the %d the arena accounts for", got, st.Resident)
	}
	if got > st.Used+floor+1<<20 {
		t.Errorf("resident %.1f MiB, want at most used + the floor + 1 MiB of pages partly in use = %.1f MiB", inMiB(got), inMiB(st.Used+floor+1<<20))
	}
	t.Logf("kept %.1f MiB after the churn, %.1f MiB after two trims; resident %.1f MiB for %.1f MiB used", inMiB(kept), inMiB(keptWhole(a)), inMiB(got), inMiB(st.Used))
	for _, ss := range live {
		a.free(ss)
	}
}

// keptWhole is what trim may give back: the resident pages of free
// blocks of whole pages, counted afresh (the arena keeps a running count).
func keptWhole(a *arena) int64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.keptWholeWalkLocked()
}

func inMiB(n int64) float64 { return float64(n) / (1 << 20) }
