package node

import (
	"context"
	"sync"
	"time"

	"github.com/discoverd/discoverd/api"
	"github.com/discoverd/discoverd/fsm"
)

// Registration batching on the leader. Concurrent registrations (those of
// its own clients and those followers forward) are written as one
// fsm.CmdAddInstances entry: one entry to store, replicate and apply instead
// of one each. Raft already shares a disk write between concurrent
// entries; the batch also shares the per-entry costs (the log store's key
// and encoding, the AppendEntries slot, the follower's store, the apply).
//
// No registration waits for a timer. One goroutine hands the waiting
// registrations to Raft as one entry; handing it over blocks while Raft's
// leader loop is busy storing the entries before (raft.Apply waits for the
// loop to take it), and whatever arrives meanwhile makes the next entry.
// Under light load each registration is written at once, alone; under
// heavy load the batches grow with the disk write they wait for. Entries
// handed over are waited for apart, so that the log stays pipelined.
//
// Each registration keeps its own result: its own revision (the index of
// a new instance), and its own error when it alone is rejected.

// maxBatch and maxBatchBytes bound the registrations of one entry.
const (
	maxBatch      = 1024
	maxBatchBytes = 1 << 20
)

type registration struct {
	cmd  []byte
	done chan struct{}
	res  *fsm.Result
	err  error
}

type registrationBatcher struct {
	v       *voter
	mu      sync.Mutex
	pending []*registration
	running bool
}

// batchable reports whether cmd is a registration the leader may write in
// a batch: every voter applies batches.
func (v *voter) batchable(cmd []byte) bool {
	return len(cmd) > 0 && fsm.CommandType(cmd[0]) == fsm.CmdAddInstanceCompact &&
		v.n.clusterCommandMax() >= fsm.CmdAddInstances
}

// apply writes one registration, in a batch with whatever other
// registrations are waiting, and returns its own result.
func (b *registrationBatcher) apply(ctx context.Context, cmd []byte) (*fsm.Result, error) {
	r := &registration{cmd: cmd, done: make(chan struct{})}
	b.mu.Lock()
	b.pending = append(b.pending, r)
	start := !b.running
	b.running = true
	b.mu.Unlock()
	if start {
		go b.run()
	}
	select {
	case <-r.done:
		return r.res, r.err
	case <-ctx.Done():
		// The registration may still be written; it was not acknowledged.
		return nil, api.Errorf(api.CodeUnavailable, "the request ended before the registration was committed: %v", ctx.Err())
	}
}

// run hands the waiting registrations to Raft, an entry at a time, until
// none is waiting.
func (b *registrationBatcher) run() {
	for {
		b.mu.Lock()
		if len(b.pending) == 0 {
			b.running = false
			b.mu.Unlock()
			return
		}
		n, size := 0, 0
		for n < len(b.pending) && n < maxBatch {
			size += len(b.pending[n].cmd)
			if n > 0 && size > maxBatchBytes {
				break
			}
			n++
		}
		batch := make([]*registration, n)
		copy(batch, b.pending)
		rest := copy(b.pending, b.pending[n:])
		clear(b.pending[rest:])
		b.pending = b.pending[:rest]
		b.mu.Unlock()
		b.write(batch)
	}
}

// write hands batch to Raft as one entry and, apart, answers each
// registration from the entry's result.
func (b *registrationBatcher) write(batch []*registration) {
	// A cluster a voter of which does not apply batches (its announcement
	// may have changed since the registration was queued) gets the entry
	// of each registration itself.
	if len(batch) > 1 && b.v.n.clusterCommandMax() < fsm.CmdAddInstances {
		for _, r := range batch {
			b.write([]*registration{r})
		}
		return
	}
	entry := batch[0].cmd
	if len(batch) > 1 {
		cmds := make([][]byte, len(batch))
		for i, r := range batch {
			cmds[i] = r.cmd
		}
		entry = fsm.AppendAddInstances(make([]byte, 0, fsm.AddInstancesSize(cmds)), cmds)
	}
	f, err := b.v.submit(entry, defaultApplyTimeout)
	if err != nil {
		answer(batch, nil, err)
		return
	}
	go func() {
		res, err := b.v.result(f)
		answer(batch, res, err)
	}()
}

// answer hands each registration of batch its result: the entry's own for
// one alone, its part of the entry's for a batch.
func answer(batch []*registration, res *fsm.Result, err error) {
	if err == nil && len(batch) > 1 && len(res.Batch) != len(batch) {
		err = api.Errorf(api.CodeUnknown, "a batch of %d registrations gave %d results", len(batch), len(res.Batch))
	}
	for i, r := range batch {
		switch {
		case err != nil:
			r.res, r.err = res, err
		case len(batch) == 1:
			r.res, r.err = res, res.Err
		default:
			r.res = &res.Batch[i]
			r.err = r.res.Err
		}
		close(r.done)
	}
}

// applyTimeout is how long a write of ctx may wait for Raft.
func applyTimeout(ctx context.Context) (time.Duration, error) {
	if dl, ok := ctx.Deadline(); ok {
		timeout := time.Until(dl)
		if timeout <= 0 {
			return 0, api.Errorf(api.CodeUnavailable, "request deadline passed before the write was sent")
		}
		return timeout, nil
	}
	return defaultApplyTimeout, nil
}
