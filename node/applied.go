package node

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/discoverd/discoverd/api"
	"github.com/discoverd/discoverd/fsm"
	"github.com/hashicorp/raft"
)

// appliedWaiters lets a request wait until the state machine has applied a
// given index: a follower answers a forwarded write only once it can serve
// the write back, and a consistent read only once it holds the leader's
// state. Apply pays one atomic load when nobody waits.
type appliedWaiters struct {
	count atomic.Int32
	mu    sync.Mutex
	ws    []appliedWaiter
}

type appliedWaiter struct {
	index uint64
	ch    chan struct{}
}

func (a *appliedWaiters) add(index uint64) chan struct{} {
	ch := make(chan struct{})
	a.mu.Lock()
	a.ws = append(a.ws, appliedWaiter{index, ch})
	a.count.Add(1)
	a.mu.Unlock()
	return ch
}

func (a *appliedWaiters) remove(ch chan struct{}) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for i, w := range a.ws {
		if w.ch == ch {
			a.ws = append(a.ws[:i], a.ws[i+1:]...)
			a.count.Add(-1)
			return
		}
	}
}

// applied releases the waiters of every index up to index.
func (a *appliedWaiters) applied(index uint64) {
	if a.count.Load() == 0 {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	kept := a.ws[:0]
	for _, w := range a.ws {
		if w.index <= index {
			close(w.ch)
			a.count.Add(-1)
			continue
		}
		kept = append(kept, w)
	}
	a.ws = kept
}

// Apply implements raft.FSM, releasing the waiters of the applied index.
func (r *raftFSM) Apply(l *raft.Log) any {
	if !r.checkEntry(l) {
		// Raft takes the entry as applied once this returns: hold its
		// goroutine until the voter stops, so that nothing after it is
		// applied, nor a snapshot taken that would claim it was.
		<-r.stopping
		return &fsm.Result{Index: l.Index, Err: errStoppedApplying}
	}
	res := r.FSM.Apply(l)
	r.waiters.applied(r.FSM.AppliedIndex())
	r.nudge.applied()
	return res
}

var errStoppedApplying = api.Errorf(api.CodeUnavailable, "this node stopped: it met a raft entry of a command type it does not know")

// waitApplied waits until the local state machine has applied index, or ctx
// ends (or a few seconds pass), and reports whether it got there.
func (v *voter) waitApplied(ctx context.Context, index uint64) bool {
	if v.fsm.AppliedIndex() >= index {
		return true
	}
	ch := v.raftFSM.waiters.add(index)
	// An apply may have happened between the check and the add.
	if v.fsm.AppliedIndex() >= index {
		v.raftFSM.waiters.remove(ch)
		return true
	}
	t := time.NewTimer(5 * time.Second)
	defer t.Stop()
	select {
	case <-ch:
		return true
	case <-ctx.Done():
	case <-t.C:
	case <-v.stopping:
	}
	v.raftFSM.waiters.remove(ch)
	return v.fsm.AppliedIndex() >= index
}
