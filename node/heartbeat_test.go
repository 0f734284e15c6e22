package node

import (
	"fmt"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"sync"
	"testing"
	"time"
)

func hbServices(t *heartbeatTable) int {
	n := 0
	t.services.Range(func(_, _ any) bool { n++; return true })
	return n
}

func TestHeartbeatTable(t *testing.T) {
	tb := newHeartbeatTable()
	a1, a2, b1 := hbKey{"a", "1"}, hbKey{"a", "2"}, hbKey{"b", "1"}
	tb.touch(a1, 10)
	tb.touchIfAbsent(a2, 20)
	tb.touchIfAbsent(a2, 99) // already there: kept
	tb.touch(b1, 30)
	for k, want := range map[hbKey]int64{a1: 10, a2: 20, b1: 30} {
		if got, ok := tb.lastSeen(k); !ok || got != want {
			t.Errorf("lastSeen(%v) = %d, %v; want %d", k, got, ok, want)
		}
	}
	if _, ok := tb.lastSeen(hbKey{"a", "3"}); ok {
		t.Error("lastSeen of an unknown instance")
	}
	if _, ok := tb.lastSeen(hbKey{"c", "1"}); ok {
		t.Error("lastSeen in an unknown service")
	}
	if n := tb.len(); n != 3 {
		t.Errorf("len %d", n)
	}
	got := tb.stale(25, nil)
	sort.Slice(got, func(i, j int) bool { return got[i].id < got[j].id })
	if want := []hbKey{a1, a2}; !slices.Equal(got, want) {
		t.Errorf("stale(25) = %v, want %v", got, want)
	}
	tb.resetAll(50)
	if got := tb.stale(50, nil); len(got) != 0 {
		t.Errorf("stale after resetAll: %v", got)
	}
	tb.remove(a1)
	tb.remove(a1)
	tb.remove(hbKey{"c", "1"})
	if _, ok := tb.lastSeen(a1); ok {
		t.Error("removed instance still there")
	}
	tb.remove(a2)
	tb.remove(b1)
	if n, s := tb.len(), hbServices(tb); n != 0 || s != 0 {
		t.Errorf("after removing everything: %d entries in %d services", n, s)
	}
}

// A service that outgrows one shard is split; nothing is lost, and once
// empty it is dropped.
func TestHeartbeatTableSplit(t *testing.T) {
	tb := newHeartbeatTable()
	const n = 3 * hbSplitAt
	for i := 0; i < n; i++ {
		tb.touch(hbKey{"big", strconv.Itoa(i)}, int64(i))
	}
	tb.touch(hbKey{"small", "x"}, 1)
	v, _ := tb.services.Load("big")
	if shards := len(v.(*hbService).shards.Load().shards); shards != hbShards {
		t.Fatalf("a service of %d instances has %d shards", n, shards)
	}
	v, _ = tb.services.Load("small")
	if shards := len(v.(*hbService).shards.Load().shards); shards != 1 {
		t.Fatalf("a service of 1 instance has %d shards", shards)
	}
	for i := 0; i < n; i++ {
		if at, ok := tb.lastSeen(hbKey{"big", strconv.Itoa(i)}); !ok || at != int64(i) {
			t.Fatalf("instance %d: %d, %v", i, at, ok)
		}
	}
	// 0..hbSplitAt-1 of big, and small's one.
	if got := len(tb.stale(hbSplitAt, nil)); got != hbSplitAt+1 {
		t.Fatalf("%d stale, want %d", got, hbSplitAt+1)
	}
	for i := 0; i < n; i++ {
		tb.remove(hbKey{"big", strconv.Itoa(i)})
	}
	if _, ok := tb.services.Load("big"); ok {
		t.Fatal("an emptied service was kept")
	}
	if tb.len() != 1 {
		t.Fatalf("len %d", tb.len())
	}
}

// TestHeartbeatTableConcurrent runs touches, removals, scans and resets of
// services that split and empty again, at once (run it with -race), then
// checks the table against what each writer left.
func TestHeartbeatTableConcurrent(t *testing.T) {
	tb := newHeartbeatTable()
	const writers, rounds = 8, 4
	per := hbSplitAt + hbSplitAt/2
	var wg sync.WaitGroup
	stop := make(chan struct{})
	var scans sync.WaitGroup
	scans.Add(1)
	go func() {
		defer scans.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			tb.stale(1<<62, nil)
			tb.resetAll(1)
			tb.len()
		}
	}()
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			// Two writers share each service, on ids of their own.
			svc := fmt.Sprintf("s%d", w/2)
			for r := 0; r < rounds; r++ {
				for i := 0; i < per; i++ {
					k := hbKey{svc, fmt.Sprintf("%d-%d", w, i)}
					if i%2 == 0 {
						tb.touch(k, 5)
					} else {
						tb.touchIfAbsent(k, 5)
					}
				}
				if r == rounds-1 {
					break
				}
				for i := 0; i < per; i++ {
					tb.remove(hbKey{svc, fmt.Sprintf("%d-%d", w, i)})
				}
			}
		}(w)
	}
	wg.Wait()
	close(stop)
	scans.Wait()
	if n := tb.len(); n != writers*per {
		t.Fatalf("%d entries, want %d", n, writers*per)
	}
	for w := 0; w < writers; w++ {
		for i := 0; i < per; i++ {
			if _, ok := tb.lastSeen(hbKey{fmt.Sprintf("s%d", w/2), fmt.Sprintf("%d-%d", w, i)}); !ok {
				t.Fatalf("writer %d's instance %d is missing", w, i)
			}
		}
	}
	if s := hbServices(tb); s != writers/2 {
		t.Fatalf("%d services, want %d", s, writers/2)
	}
}

// BenchmarkHeartbeatTouch refreshes instances of one service of 100,000
// from every P at once, as heartbeats do.
func BenchmarkHeartbeatTouch(b *testing.B) {
	tb := newHeartbeatTable()
	keys := make([]hbKey, 100_000)
	for i := range keys {
		keys[i] = hbKey{"bench", "m-" + strconv.Itoa(i)}
		tb.touchIfAbsent(keys[i], 1)
	}
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			tb.touch(keys[i%len(keys)], int64(i))
			i += 7919
		}
	})
}

// BenchmarkHeartbeatTableMemory reports the heap bytes the table takes per
// instance of one service of b.N instances (b.N from -benchtime, e.g.
// -benchtime=1000000x), its ids excluded: they are the state machine's
// strings, which the table shares.
func BenchmarkHeartbeatTableMemory(b *testing.B) {
	ids := make([]string, b.N)
	for i := range ids {
		ids[i] = fmt.Sprintf("i-%08d", i)
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	tbl := newHeartbeatTable()
	now := time.Now().UnixNano()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		tbl.touch(hbKey{"svc", ids[i]}, now)
	}
	b.StopTimer()
	runtime.GC()
	runtime.ReadMemStats(&after)
	if n := tbl.len(); n != b.N {
		b.Fatalf("table holds %d, want %d", n, b.N)
	}
	b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/float64(b.N), "B/instance")
	runtime.KeepAlive(ids)
}
