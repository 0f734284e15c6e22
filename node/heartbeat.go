package node

import (
	"hash/maphash"
	"sync"
	"sync/atomic"
	"time"
)

func nowNanos() int64 { return time.Now().UnixNano() }

// hbKey names one instance in the heartbeat table. The strings are the ones
// the state machine holds, so an entry adds no string bytes of its own.
type hbKey struct {
	service string
	id      string
}

// heartbeatTable records when each instance was last heard from, in Unix
// nanoseconds. It lives in memory only: a heartbeat of an unchanged instance
// touches this table and nothing else, never the Raft log.
//
// Each service has a table of its own, keyed by instance id alone: a 24-byte
// map slot (the id and the time) an instance, where one table keyed by
// service and id took 40; with the maps' free slots, 34 B an instance of a
// service of 100,000 instead of 61. A service's table is one shard until it
// holds more than hbSplitAt instances, then hbShards shards by hash of the
// id, so that heartbeats of a big service on many cores rarely meet on one
// lock. The services are found through a sync.Map: a heartbeat writes to no
// memory but its own shard's.
type heartbeatTable struct {
	seed     maphash.Seed
	services sync.Map // service name -> *hbService
}

const (
	hbShards  = 64
	hbSplitAt = 1024
)

// hbService is one service's table.
type hbService struct {
	name   string
	shards atomic.Pointer[hbShardSet]
}

// hbShardSet is the shards of a service's table. A set is replaced (when it
// splits, or when the service's table is dropped as empty) only while every
// one of its shards is locked, and marked moved then: whoever locks a shard
// of a moved set lets go and starts over.
type hbShardSet struct {
	shards []hbShard
	moved  bool
}

type hbShard struct {
	mu   sync.Mutex
	seen map[string]int64
	_    [48]byte // keep shards on separate cache lines
}

func newHeartbeatTable() *heartbeatTable {
	return &heartbeatTable{seed: maphash.MakeSeed()}
}

func newShardSet(n int) *hbShardSet {
	return &hbShardSet{shards: make([]hbShard, n)}
}

func (t *heartbeatTable) shardOf(set *hbShardSet, id string) *hbShard {
	if len(set.shards) == 1 {
		return &set.shards[0]
	}
	return &set.shards[maphash.String(t.seed, id)%uint64(len(set.shards))]
}

// lock returns k's shard, locked, with its service and set. With create, a
// service with no table gets one; without, a nil shard means none.
func (t *heartbeatTable) lock(k hbKey, create bool) (*hbService, *hbShardSet, *hbShard) {
	for {
		v, ok := t.services.Load(k.service)
		if !ok {
			if !create {
				return nil, nil, nil
			}
			svc := &hbService{name: k.service}
			svc.shards.Store(newShardSet(1))
			v, _ = t.services.LoadOrStore(k.service, svc)
		}
		svc := v.(*hbService)
		set := svc.shards.Load()
		sh := t.shardOf(set, k.id)
		sh.mu.Lock()
		if !set.moved {
			if sh.seen == nil {
				sh.seen = make(map[string]int64)
			}
			return svc, set, sh
		}
		sh.mu.Unlock()
	}
}

// touch records a heartbeat at now.
func (t *heartbeatTable) touch(k hbKey, now int64) {
	svc, set, sh := t.lock(k, true)
	n := len(sh.seen)
	sh.seen[k.id] = now
	grew := len(sh.seen) > n
	sh.mu.Unlock()
	if grew {
		t.maybeSplit(svc, set)
	}
}

// touchIfAbsent starts the clock of an instance this node has not heard yet.
func (t *heartbeatTable) touchIfAbsent(k hbKey, now int64) {
	svc, set, sh := t.lock(k, true)
	_, ok := sh.seen[k.id]
	if !ok {
		sh.seen[k.id] = now
	}
	sh.mu.Unlock()
	if !ok {
		t.maybeSplit(svc, set)
	}
}

func (t *heartbeatTable) remove(k hbKey) {
	svc, set, sh := t.lock(k, false)
	if sh == nil {
		return
	}
	delete(sh.seen, k.id)
	empty := len(sh.seen) == 0
	sh.mu.Unlock()
	if empty {
		t.maybeDrop(svc, set)
	}
}

func (t *heartbeatTable) lastSeen(k hbKey) (int64, bool) {
	_, _, sh := t.lock(k, false)
	if sh == nil {
		return 0, false
	}
	v, ok := sh.seen[k.id]
	sh.mu.Unlock()
	return v, ok
}

// lockAll locks every shard of set and reports whether it is still the
// service's current set; if not, it has unlocked them again.
func lockAll(set *hbShardSet) bool {
	for i := range set.shards {
		set.shards[i].mu.Lock()
	}
	if set.moved {
		unlockAll(set)
		return false
	}
	return true
}

func unlockAll(set *hbShardSet) {
	for i := range set.shards {
		set.shards[i].mu.Unlock()
	}
}

// maybeSplit spreads a one-shard service that outgrew hbSplitAt over
// hbShards shards.
func (t *heartbeatTable) maybeSplit(svc *hbService, set *hbShardSet) {
	if len(set.shards) != 1 {
		return
	}
	sh := &set.shards[0]
	sh.mu.Lock()
	if set.moved || len(sh.seen) <= hbSplitAt {
		sh.mu.Unlock()
		return
	}
	next := newShardSet(hbShards)
	for id, at := range sh.seen {
		dst := t.shardOf(next, id)
		if dst.seen == nil {
			dst.seen = make(map[string]int64, 2*len(sh.seen)/hbShards)
		}
		dst.seen[id] = at
	}
	svc.shards.Store(next)
	set.moved = true
	sh.seen = nil
	sh.mu.Unlock()
}

// maybeDrop removes a service's table once it is empty, so that services
// created and removed over time leave nothing behind.
func (t *heartbeatTable) maybeDrop(svc *hbService, set *hbShardSet) {
	if !lockAll(set) {
		return
	}
	defer unlockAll(set)
	for i := range set.shards {
		if len(set.shards[i].seen) > 0 {
			return
		}
	}
	set.moved = true
	t.services.CompareAndDelete(svc.name, svc)
}

// eachShard calls fn with every shard that holds entries, locked, one at a
// time, and the service's name. A shard whose set moved meanwhile is
// skipped and the service's new set visited instead, so fn may see an entry
// twice in the rare case that its service split during the walk.
func (t *heartbeatTable) eachShard(fn func(service string, seen map[string]int64)) {
	t.services.Range(func(_, v any) bool {
		svc := v.(*hbService)
		set := svc.shards.Load()
		for i := 0; i < len(set.shards); i++ {
			sh := &set.shards[i]
			sh.mu.Lock()
			if set.moved {
				sh.mu.Unlock()
				next := svc.shards.Load()
				if next == set {
					// Dropped: it was empty.
					break
				}
				set, i = next, -1
				continue
			}
			if len(sh.seen) > 0 {
				fn(svc.name, sh.seen)
			}
			sh.mu.Unlock()
		}
		return true
	})
}

// resetAll gives every instance a fresh TTL from now. A new Raft leader whose
// heartbeat feed it cannot trust does this instead of expiring on old times.
func (t *heartbeatTable) resetAll(now int64) {
	t.eachShard(func(_ string, seen map[string]int64) {
		for id := range seen {
			seen[id] = now
		}
	})
}

// atLeast moves every time older than t up to t. A new leader whose feed it
// trusts does this with the moment the cluster lost its old leader: from then
// until the election, no node could accept a heartbeat, and an instance must
// not lose its TTL to that gap.
func (t *heartbeatTable) atLeast(at int64) {
	t.eachShard(func(_ string, seen map[string]int64) {
		for id, v := range seen {
			if v < at {
				seen[id] = at
			}
		}
	})
}

// stale returns the instances last heard before cutoff, appended to dst.
func (t *heartbeatTable) stale(cutoff int64, dst []hbKey) []hbKey {
	t.eachShard(func(service string, seen map[string]int64) {
		for id, at := range seen {
			if at < cutoff {
				dst = append(dst, hbKey{service, id})
			}
		}
	})
	return dst
}

func (t *heartbeatTable) len() int {
	n := 0
	t.eachShard(func(_ string, seen map[string]int64) { n += len(seen) })
	return n
}
