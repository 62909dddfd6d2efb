//go:build linux && !nommap

package cache

import (
	"math/rand/v2"
	"os"
	"sync"
	"testing"
	"time"
)

// writeWhole writes every byte of the blocks of ss (not only their len),
// as a body filling its blocks would.
func writeWhole(a *arena, ss []span, v byte) {
	for _, s := range ss {
		if s.order < 0 {
			continue
		}
		blk := a.blockMemLocked(s.block, minBlock<<s.order)
		for i := range blk {
			blk[i] = v
		}
	}
}

// TestArenaTrimRandomly interleaves allocations, frees and trims at
// random (a review's test of trim); after each step checkArena (resident
// == bits, live pages marked, the given-back blocks last in their lists,
// keptWhole), each trim gives back half of what was over the floor, or
// all of it, to a page, bodies are intact, and, page by page, the
// kernel's view equals residentBits (every block is written whole, so a
// marked page is resident; a failed allocation marks pages it never
// wrote, which only over-counts).
func TestArenaTrimRandomly(t *testing.T) {
	if os.Getpagesize() != 4096 {
		t.Skip("4 KiB pages")
	}
	for _, tc := range []struct {
		name    string
		maxCost int64
		maxSize int
		seed    uint64
		po      int8 // pageOrder override (-1: none)
	}{
		{"1MiB-small", 1 << 20, 40 << 10, 1, -1},
		{"1MiB-small-po-top", 1 << 20, 40 << 10, 5, 7},
		{"1MiB-mixed-po-top", 1 << 20, 200 << 10, 6, 7},
		{"4MiB-mixed-po5", 4 << 20, 600 << 10, 7, 5},
		{"4MiB-mixed-po-top", 4 << 20, 600 << 10, 8, 9},
		{"1MiB-mixed", 1 << 20, 200 << 10, 2, -1},
		{"4MiB-mixed", 4 << 20, 600 << 10, 3, -1},
		{"64MiB-mixed", 64 << 20, 1 << 20, 4, -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := newArena(tc.maxCost)
			a.trimEvery = time.Hour
			if tc.po >= 0 {
				a.pageOrder = tc.po
			}
			defer a.close()
			rng := rand.New(rand.NewPCG(tc.seed, 99))
			live := newLiveSet()
			var ids []int
			sizes := map[int]int{}
			lastFail := -1
			steps := 3000
			if tc.maxCost > 4<<20 {
				steps = 600
			}
			if testing.Short() {
				steps /= 5
			}
			for op := 0; op < steps; op++ {
				switch r := rng.IntN(10); {
				case r < 5:
					n := 1 + rng.IntN(tc.maxSize)
					if rng.IntN(3) == 0 {
						n = 1 + rng.IntN(4096)
					}
					ss, ok := a.appendAlloc(nil, n, false)
					if !ok {
						lastFail = op
						break
					}
					writeWhole(a, ss, byte(op))
					fillSpans(ss, patternFor(op, n))
					live.spans[op], sizes[op] = ss, n
					ids = append(ids, op)
				case r < 9:
					if len(ids) == 0 {
						break
					}
					j := rng.IntN(len(ids))
					id := ids[j]
					if !spansEqual(live.spans[id], patternFor(id, sizes[id])) {
						t.Fatalf("op %d: body %d changed (a trim gave back pages in use?)", op, id)
					}
					a.free(live.spans[id])
					delete(live.spans, id)
					ids[j] = ids[len(ids)-1]
					ids = ids[:len(ids)-1]
				default:
					if rng.IntN(2) == 0 {
						a.mu.Lock()
						a.allocated = false
						a.mu.Unlock()
					}
					a.mu.Lock()
					k0, alloc := a.keptWholeWalkLocked(), a.allocated
					a.mu.Unlock()
					a.trim()
					k1 := keptWhole(a)
					fl := a.trimFloor()
					if k0 > fl {
						want := fl
						if alloc {
							want = fl + (k0 - fl) - (k0-fl)/2
						}
						if k1 > want || k1 < want-a.pageBytes() {
							t.Fatalf("op %d: trim (allocated %v) kept %d -> %d, want %d (floor %d)", op, alloc, k0, k1, want, fl)
						}
					} else if k1 != k0 {
						t.Fatalf("op %d: trim under floor changed kept %d -> %d", op, k0, k1)
					}
				}
				checkArena(t, a, live)
				for _, id := range ids {
					if !spansEqual(live.spans[id], patternFor(id, sizes[id])) {
						t.Fatalf("op %d: body %d changed", op, id)
					}
				}
				kp := kernelPages(t, a)
				if tc.po >= 0 {
					kp = nil
				}
				a.mu.Lock()
				for p, in := range kp {
					bit := a.residentBits[p/64]&(1<<(p%64)) != 0
					if in && !bit || bit && !in && lastFail < 0 {
						a.mu.Unlock()
						t.Fatalf("op %d (last failed alloc op %d): page %d: bit %v, kernel resident %v", op, lastFail, p, bit, in)
					}
				}
				a.mu.Unlock()
			}
			// idle: two trims bring kept whole pages to the floor
			a.trim()
			a.trim()
			if got := keptWhole(a); got > a.trimFloor() {
				t.Errorf("after idle trims %d kept, floor %d", got, a.trimFloor())
			}
			checkArena(t, a, live)
		})
	}
}

// TestArenaTrimWhileInUse: frees and allocations from several goroutines
// while the timer trims every millisecond (a review's test): bodies stay
// intact, the accounting consistent, and close stops it.
func TestArenaTrimWhileInUse(t *testing.T) {
	for round := 0; round < 5; round++ {
		a := newArena(4 << 20)
		a.trimEvery = time.Millisecond
		var wg sync.WaitGroup
		var mu sync.Mutex
		live := newLiveSet()
		for g := 0; g < 4; g++ {
			wg.Add(1)
			go func(g int) {
				defer wg.Done()
				rng := rand.New(rand.NewPCG(uint64(round), uint64(g)))
				var mine [][]span
				var ids []int
				for op := 0; op < 3000; op++ {
					if rng.IntN(2) == 0 || len(mine) == 0 {
						n := 1 + rng.IntN(200<<10)
						ss, ok := a.appendAlloc(nil, n, false)
						if !ok {
							continue
						}
						id := g<<20 | op
						fillSpans(ss, patternFor(id, n))
						mine = append(mine, ss)
						ids = append(ids, id)
						continue
					}
					j := rng.IntN(len(mine))
					if !spansEqual(mine[j], patternFor(ids[j], spanLen(mine[j]))) {
						t.Errorf("body %d changed", ids[j])
						return
					}
					a.free(mine[j])
					mine[j], ids[j] = mine[len(mine)-1], ids[len(ids)-1]
					mine, ids = mine[:len(mine)-1], ids[:len(ids)-1]
					if op%97 == 0 {
						time.Sleep(time.Millisecond)
					}
				}
				mu.Lock()
				for i, ss := range mine {
					live.spans[ids[i]] = ss
				}
				mu.Unlock()
			}(g)
		}
		wg.Wait()
		time.Sleep(20 * time.Millisecond)
		checkArena(t, a, live)
		a.close()
		checkArena(t, a, live) // every free page given back, firstGiven at the heads
		for id, ss := range live.spans {
			a.free(ss)
			delete(live.spans, id)
			checkArena(t, a, live)
		}
		time.Sleep(5 * time.Millisecond)
		if st := a.stats(); st.Mapped != 0 || st.Resident != 0 {
			t.Fatalf("after close and frees: %+v", st)
		}
	}
}
