package node

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"sync"

	"github.com/discoverd/discoverd/api"
	"github.com/discoverd/discoverd/fsm"
)

// ApplyBatchPath is the internal route on which a follower hands several
// writes to the Raft leader in one request: the body is uvarint n, then n
// times a uvarint length and an encoded command; the answer is a JSON array
// of n api.AppliedResult, in order, each with its own index or error.
const ApplyBatchPath = "/raft/apply-batch"

// maxForwardBatch and maxForwardBatchBytes bound the writes of one
// forwarded request, well within the leader's limit on a request body.
const (
	maxForwardBatch      = 1024
	maxForwardBatchBytes = 512 << 10
)

// maxForwardsInFlight is how many batches a follower has out to the leader
// at once: while they are, the writes that arrive wait to go together.
const maxForwardsInFlight = 2

// EncodeCommandBatch is the body of a POST to ApplyBatchPath.
func EncodeCommandBatch(cmds [][]byte) []byte {
	size := binary.MaxVarintLen64
	for _, c := range cmds {
		size += binary.MaxVarintLen64 + len(c)
	}
	b := binary.AppendUvarint(make([]byte, 0, size), uint64(len(cmds)))
	for _, c := range cmds {
		b = binary.AppendUvarint(b, uint64(len(c)))
		b = append(b, c...)
	}
	return b
}

// DecodeCommandBatch reads a body of EncodeCommandBatch. The commands are
// slices of b.
func DecodeCommandBatch(b []byte) ([][]byte, error) {
	n, l := binary.Uvarint(b)
	if l <= 0 || n == 0 || n > maxForwardBatch || n > uint64(len(b)) {
		return nil, api.Errorf(api.CodeValidation, "a batch of commands must start with their count, 1 to %d", maxForwardBatch)
	}
	off := l
	cmds := make([][]byte, n)
	for i := range cmds {
		size, l := binary.Uvarint(b[off:])
		if l <= 0 || size == 0 || size > uint64(len(b)-off-l) {
			return nil, api.Errorf(api.CodeValidation, "command %d of the batch is empty or runs past the end", i)
		}
		off += l
		cmds[i] = b[off : off+int(size)]
		off += int(size)
	}
	if off != len(b) {
		return nil, api.Errorf(api.CodeValidation, "trailing bytes after the batch of commands")
	}
	return cmds, nil
}

// ApplyForwardedBatch serves writes a follower forwarded together: each is
// applied here as ApplyForwarded applies one (the registrations among them
// in one entry), and each gets its own answer.
func (n *Node) ApplyForwardedBatch(ctx context.Context, body []byte) ([]api.AppliedResult, error) {
	v := n.v.Load()
	if v == nil || !v.isLeader() {
		return nil, n.noLeaderError()
	}
	cmds, err := DecodeCommandBatch(body)
	if err != nil {
		return nil, err
	}
	out := make([]api.AppliedResult, len(cmds))
	var wg sync.WaitGroup
	for i, cmd := range cmds {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := v.applyLocal(ctx, cmd)
			if res != nil {
				out[i].Index = res.Index
			}
			if err != nil {
				out[i].Error = api.AsError(err)
				return
			}
			out[i].Instance, out[i].Meta = res.Instance, res.Meta
		}()
	}
	wg.Wait()
	return out, nil
}

// forwardBatcher gathers a follower's concurrent writes into one request
// per batch to the leader (ApplyBatchPath), at most maxForwardsInFlight at
// once: one HTTP round trip, on each side, for many writes.
type forwardBatcher struct {
	fwd *forwarder
	mu  sync.Mutex
	// queues holds the writes waiting for each leader address.
	queues map[string]*forwardQueue
}

type forwardQueue struct {
	pending  []*forwardedWrite
	inFlight int
}

type forwardedWrite struct {
	cmd  []byte
	done chan struct{}
	res  *fsm.Result
	err  error
}

// forward applies cmd on the leader at addr with whatever other writes are
// waiting for it, and returns its own result.
func (b *forwardBatcher) forward(ctx context.Context, addr string, cmd []byte) (*fsm.Result, error) {
	w := &forwardedWrite{cmd: cmd, done: make(chan struct{})}
	b.mu.Lock()
	if b.queues == nil {
		b.queues = make(map[string]*forwardQueue)
	}
	q := b.queues[addr]
	if q == nil {
		q = &forwardQueue{}
		b.queues[addr] = q
	}
	q.pending = append(q.pending, w)
	var batch []*forwardedWrite
	if q.inFlight < maxForwardsInFlight {
		q.inFlight++
		batch = q.take()
	}
	b.mu.Unlock()
	if batch != nil {
		go b.run(addr, q, batch)
	}
	select {
	case <-w.done:
		return w.res, w.err
	case <-ctx.Done():
		// The write may still reach the leader; it was not acknowledged.
		return nil, api.Errorf(api.CodeUnavailable, "the request ended before the leader answered: %v", ctx.Err())
	}
}

// take removes up to maxForwardBatch waiting writes; b.mu is held.
func (q *forwardQueue) take() []*forwardedWrite {
	n, size := 0, 0
	for n < len(q.pending) && n < maxForwardBatch {
		size += len(q.pending[n].cmd) + binary.MaxVarintLen64
		if n > 0 && size > maxForwardBatchBytes {
			break
		}
		n++
	}
	batch := make([]*forwardedWrite, n)
	copy(batch, q.pending)
	rest := copy(q.pending, q.pending[n:])
	clear(q.pending[rest:])
	q.pending = q.pending[:rest]
	return batch
}

// run sends batch, then each batch that gathered meanwhile, until none is
// waiting.
func (b *forwardBatcher) run(addr string, q *forwardQueue, batch []*forwardedWrite) {
	for {
		b.send(addr, batch)
		b.mu.Lock()
		if len(q.pending) == 0 {
			q.inFlight--
			if q.inFlight == 0 {
				delete(b.queues, addr)
			}
			b.mu.Unlock()
			return
		}
		batch = q.take()
		b.mu.Unlock()
	}
}

// send forwards one batch and hands every write its answer.
func (b *forwardBatcher) send(addr string, batch []*forwardedWrite) {
	defer func() {
		for _, w := range batch {
			close(w.done)
		}
	}()
	if len(batch) == 1 {
		// Alone, it goes as it always did.
		w := batch[0]
		w.res, w.err = b.fwd.forward(context.Background(), addr, w.cmd)
		return
	}
	cmds := make([][]byte, len(batch))
	for i, w := range batch {
		cmds[i] = w.cmd
	}
	results, err := b.fwd.forwardBatch(addr, EncodeCommandBatch(cmds))
	if err == nil && len(results) != len(batch) {
		err = api.Errorf(api.CodeUnavailable, "leader %s answered %d results for %d writes", addr, len(results), len(batch))
	}
	for i, w := range batch {
		if err != nil {
			w.err = err
			continue
		}
		r := &results[i]
		w.res = &fsm.Result{Index: r.Index, Instance: r.Instance, Meta: r.Meta}
		if r.Error != nil {
			w.res.Err = r.Error
			w.err = r.Error
		}
	}
}

// forwardBatch posts a batch of writes to the leader at addr.
func (f *forwarder) forwardBatch(addr string, body []byte) ([]api.AppliedResult, error) {
	ctx, cancel := context.WithTimeout(context.Background(), defaultApplyTimeout)
	defer cancel()
	answer, _, err := f.postToLeader(ctx, addr, ApplyBatchPath, body, 64<<20)
	if err != nil {
		return nil, err
	}
	var out []api.AppliedResult
	if err := json.Unmarshal(answer, &out); err != nil {
		return nil, api.Errorf(api.CodeUnavailable, "leader %s answered malformed JSON: %v", addr, err)
	}
	return out, nil
}
