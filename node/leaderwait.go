package node

import (
	"context"
	"time"
)

// leaderWaitPoll is how often a request waiting for a leader looks again.
// Only requests that found no leader pay it; the rest never get here.
const leaderWaitPoll = 10 * time.Millisecond

// awaitCond waits until cond holds, for at most Config.LeaderWait, the
// request's context or the node's life, and reports whether it held. It is
// how a request that needs the Raft leader rides out a start-up or an
// election (as Consul's rpc_hold_timeout does) instead of failing the
// moment it finds none.
func (n *Node) awaitCond(ctx context.Context, cond func() bool) bool {
	if cond() {
		return true
	}
	if n.cfg.LeaderWait <= 0 {
		return false
	}
	deadline := time.NewTimer(n.cfg.LeaderWait)
	defer deadline.Stop()
	tick := time.NewTicker(leaderWaitPoll)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return cond()
		case <-n.closing:
			return false
		case <-deadline.C:
			return cond()
		case <-tick.C:
			if cond() {
				return true
			}
		}
	}
}

// awaitLeader waits (see awaitCond) until v leads or knows the leader, and
// returns the leader's address ("" when it leads itself or none came).
func (n *Node) awaitLeader(ctx context.Context, v *voter) (leader string, isLeader bool) {
	n.awaitCond(ctx, func() bool {
		if v.isLeader() {
			return true
		}
		addr, _ := v.raft.LeaderWithID()
		return addr != ""
	})
	if v.isLeader() {
		return "", true
	}
	addr, _ := v.raft.LeaderWithID()
	return string(addr), false
}

// WaitRaftLeader is RaftLeader, waiting (see awaitCond) while none is known.
func (n *Node) WaitRaftLeader(ctx context.Context) string {
	var leader string
	n.awaitCond(ctx, func() bool {
		leader = n.RaftLeader()
		return leader != ""
	})
	return leader
}
