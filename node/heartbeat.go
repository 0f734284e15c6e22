package node

import (
	"hash/maphash"
	"sync"
	"time"
)

func nowNanos() int64 { return time.Now().UnixNano() }

// hbKey names one instance in the heartbeat table. The strings are the ones
// the state machine holds, so an entry adds no string bytes of its own.
type hbKey struct {
	service string
	id      string
}

const hbShards = 64

// heartbeatTable records when each instance was last heard from, in Unix
// nanoseconds. It lives in memory only: a heartbeat of an unchanged instance
// touches this table and nothing else, never the Raft log.
//
// It is sharded so that heartbeats on many cores rarely meet on one lock.
type heartbeatTable struct {
	seed   maphash.Seed
	shards [hbShards]hbShard
}

type hbShard struct {
	mu   sync.Mutex
	seen map[hbKey]int64
	_    [40]byte // keep shards on separate cache lines
}

func newHeartbeatTable() *heartbeatTable {
	t := &heartbeatTable{seed: maphash.MakeSeed()}
	for i := range t.shards {
		t.shards[i].seen = make(map[hbKey]int64)
	}
	return t
}

func (t *heartbeatTable) shard(k hbKey) *hbShard {
	return &t.shards[maphash.String(t.seed, k.id)%hbShards]
}

// touch records a heartbeat at now.
func (t *heartbeatTable) touch(k hbKey, now int64) {
	s := t.shard(k)
	s.mu.Lock()
	s.seen[k] = now
	s.mu.Unlock()
}

// touchIfAbsent starts the clock of an instance this node has not heard yet.
func (t *heartbeatTable) touchIfAbsent(k hbKey, now int64) {
	s := t.shard(k)
	s.mu.Lock()
	if _, ok := s.seen[k]; !ok {
		s.seen[k] = now
	}
	s.mu.Unlock()
}

func (t *heartbeatTable) remove(k hbKey) {
	s := t.shard(k)
	s.mu.Lock()
	delete(s.seen, k)
	s.mu.Unlock()
}

func (t *heartbeatTable) lastSeen(k hbKey) (int64, bool) {
	s := t.shard(k)
	s.mu.Lock()
	v, ok := s.seen[k]
	s.mu.Unlock()
	return v, ok
}

// resetAll gives every instance a fresh TTL from now. A new Raft leader whose
// heartbeat feed it cannot trust does this instead of expiring on old times.
func (t *heartbeatTable) resetAll(now int64) {
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.Lock()
		for k := range s.seen {
			s.seen[k] = now
		}
		s.mu.Unlock()
	}
}

// stale returns the instances last heard before cutoff, appended to dst.
func (t *heartbeatTable) stale(cutoff int64, dst []hbKey) []hbKey {
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.Lock()
		for k, at := range s.seen {
			if at < cutoff {
				dst = append(dst, k)
			}
		}
		s.mu.Unlock()
	}
	return dst
}

func (t *heartbeatTable) len() int {
	n := 0
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.Lock()
		n += len(s.seen)
		s.mu.Unlock()
	}
	return n
}
