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
// No registration waits for a timer: the first one that finds fewer than
// maxBatchesInFlight batches in flight is written at once, alone; whatever
// arrives while batches are in flight is written next, together. Under
// light load nothing changes; under heavy load the batches grow.
//
// Each registration keeps its own result: its own revision (the index of
// a new instance), and its own error when it alone is rejected.

const (
	// maxBatchesInFlight is how many batch entries may be in Raft at once:
	// two, so that the leader stores the next while the last is being
	// replicated and applied.
	maxBatchesInFlight = 2
	// maxBatch bounds the registrations of one entry (a few hundred KB).
	maxBatch = 1024
)

type registration struct {
	cmd  []byte
	done chan struct{}
	res  *fsm.Result
	err  error
}

type registrationBatcher struct {
	v        *voter
	mu       sync.Mutex
	pending  []*registration
	inFlight int
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
	var batch []*registration
	if b.inFlight < maxBatchesInFlight {
		b.inFlight++
		batch = b.take()
	}
	b.mu.Unlock()
	if batch != nil {
		go b.run(batch)
	}
	select {
	case <-r.done:
		return r.res, r.err
	case <-ctx.Done():
		// The registration may still be written; it was not acknowledged.
		return nil, api.Errorf(api.CodeUnavailable, "the request ended before the registration was committed: %v", ctx.Err())
	}
}

// take removes up to maxBatch waiting registrations; b.mu is held.
func (b *registrationBatcher) take() []*registration {
	n := min(len(b.pending), maxBatch)
	batch := make([]*registration, n)
	copy(batch, b.pending)
	rest := copy(b.pending, b.pending[n:])
	clear(b.pending[rest:])
	b.pending = b.pending[:rest]
	return batch
}

// run writes batch, then each batch that gathered meanwhile, until none is
// waiting.
func (b *registrationBatcher) run(batch []*registration) {
	for {
		b.write(batch)
		b.mu.Lock()
		if len(b.pending) == 0 {
			b.inFlight--
			b.mu.Unlock()
			return
		}
		batch = b.take()
		b.mu.Unlock()
	}
}

// write applies one batch and hands every registration its result.
func (b *registrationBatcher) write(batch []*registration) {
	defer func() {
		for _, r := range batch {
			close(r.done)
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), defaultApplyTimeout)
	defer cancel()
	// One registration alone, or a cluster a voter of which does not apply
	// batches (its announcement may have changed since the registration
	// was queued): the entry of the registration itself.
	if len(batch) == 1 || b.v.n.clusterCommandMax() < fsm.CmdAddInstances {
		b.writeEach(ctx, batch)
		return
	}
	cmds := make([][]byte, len(batch))
	for i, r := range batch {
		cmds[i] = r.cmd
	}
	entry := fsm.AppendAddInstances(make([]byte, 0, fsm.AddInstancesSize(cmds)), cmds)
	res, err := b.v.applyRaft(ctx, entry)
	if err == nil && len(res.Batch) != len(batch) {
		err = api.Errorf(api.CodeUnknown, "a batch of %d registrations gave %d results", len(batch), len(res.Batch))
	}
	for i, r := range batch {
		if err != nil {
			r.err = err
			continue
		}
		r.res = &res.Batch[i]
		r.err = r.res.Err
	}
}

// writeEach writes each registration of batch as its own entry, all handed
// to Raft before any is waited for, so that they still share a disk write.
func (b *registrationBatcher) writeEach(ctx context.Context, batch []*registration) {
	if len(batch) == 1 {
		batch[0].res, batch[0].err = b.v.applyRaft(ctx, batch[0].cmd)
		return
	}
	var wg sync.WaitGroup
	for _, r := range batch {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.res, r.err = b.v.applyRaft(ctx, r.cmd)
		}()
	}
	wg.Wait()
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
