package node

import (
	"errors"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
)

// commitNudge tells followers the leader's commit index as soon as the
// leader has applied new entries, instead of at Raft's next CommitTimeout.
//
// hashicorp/raft sends the commit index only in AppendEntries, which go out
// when there are new entries or when the CommitTimeout timer fires; its
// heartbeats do not carry it. A follower therefore applies an entry (and
// sends its events to its own subscribers, and answers a forwarded write
// that waits for it) one AppendEntries after the one that brought it, up to
// a CommitTimeout later. A short CommitTimeout wakes the leader and every
// follower many times a second even when nothing happens.
//
// Instead, once the leader's state machine has applied entries, the nudge
// appends a Raft barrier (a LogBarrier entry: replicated, never passed to
// the state machine) whose AppendEntries carries the commit index of what
// was applied. At most one barrier is outstanding; when it resolves,
// another is issued only if more entries were applied since the last one
// was issued. Under load the barrier joins the batch of entries being
// written anyway; at idle nothing is issued, and CommitTimeout can stay
// long.
type commitNudge struct {
	// raft is set once Raft is started; Apply runs only after that, but the
	// state machine is made before Raft is.
	raft atomic.Pointer[raft.Raft]
	// multiVoter is the node's: a single voter has no follower to tell,
	// and a barrier would cost it a disk write for nothing.
	multiVoter *atomic.Bool
	// dirty: entries were applied since the last barrier was issued.
	dirty atomic.Bool
	// wake takes one signal that dirty was set.
	wake chan struct{}
	// issued counts barriers issued, for metrics and tests.
	issued atomic.Uint64
}

// nudgeEnqueueTimeout bounds how long a barrier waits to be taken by the
// Raft leader loop; past it the nudge gives up until the next apply (the
// follower then learns the commit index at the next CommitTimeout).
const nudgeEnqueueTimeout = 5 * time.Second

func newCommitNudge(multiVoter *atomic.Bool) *commitNudge {
	return &commitNudge{wake: make(chan struct{}, 1), multiVoter: multiVoter}
}

// applied is called by the state machine after each entry it applied. On a
// follower it costs a few atomic loads; on the leader a signal per batch.
func (c *commitNudge) applied() {
	if c.dirty.Load() || !c.multiVoter.Load() {
		return
	}
	r := c.raft.Load()
	if r == nil || r.State() != raft.Leader {
		return
	}
	c.dirty.Store(true)
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// run issues the barriers until stopping is closed.
func (c *commitNudge) run(stopping <-chan struct{}, log func(error)) {
	for {
		select {
		case <-stopping:
			return
		case <-c.wake:
		}
		for c.dirty.Swap(false) {
			r := c.raft.Load()
			if r.State() != raft.Leader {
				break
			}
			c.issued.Add(1)
			// Waiting for the barrier to be applied keeps one outstanding:
			// entries applied meanwhile set dirty again, and the next
			// barrier carries their commit index.
			err := r.Barrier(nudgeEnqueueTimeout).Error()
			switch {
			case err == nil:
			case errors.Is(err, raft.ErrRaftShutdown):
				return
			case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrLeadershipLost), errors.Is(err, raft.ErrLeadershipTransferInProgress):
				// The new leader nudges its own followers.
			default:
				log(err)
			}
		}
	}
}
