package node

import (
	"context"
	"time"

	"github.com/discoverd/discoverd/api"
)

// serviceListCoalesce is how long the stream of the service list lets
// changes gather once one arrived: a burst of registrations goes out as one
// summary per service, not one per registration, and a reader watching a
// service grow by thousands of instances a second is sent a few updates.
const serviceListCoalesce = 100 * time.Millisecond

// ServiceWatch streams the service list: every service with its instance
// count and leader, then the services whose count or leader changed. It
// reads the state machine after each applied entry (one step per service,
// never per instance), so it costs the apply path nothing but the wake-up of
// one waiter.
type ServiceWatch struct {
	n *Node
	v *voter
	// ended is closed when the node ends every stream (EndStreams, before
	// its HTTP server shuts down), so this one does not hold the shutdown.
	ended  <-chan struct{}
	sent   map[string]api.ServiceSummary
	index  uint64
	opened bool
}

// WatchServices opens a stream of the service list; see api.ServiceWatch.
func (n *Node) WatchServices() (api.ServiceWatch, error) {
	v, err := n.readyVoter()
	if err != nil {
		return nil, err
	}
	return &ServiceWatch{n: n, v: v, ended: n.hub.endedChan(), sent: make(map[string]api.ServiceSummary)}, nil
}

// Next implements api.ServiceWatch.
func (w *ServiceWatch) Next(ctx context.Context) ([]api.ServiceSummary, error) {
	for {
		if w.opened {
			if err := w.wait(ctx); err != nil {
				return nil, err
			}
		}
		list, index := w.v.fsm.ServiceSummaries()
		w.index = index
		var batch []api.ServiceSummary
		seen := make(map[string]struct{}, len(list))
		for _, s := range list {
			seen[s.Service] = struct{}{}
			// Instances are immutable once stored, so a leader that changed
			// in any way is a different pointer.
			if old, ok := w.sent[s.Service]; ok && old.Instances == s.Instances && old.Leader == s.Leader {
				continue
			}
			w.sent[s.Service] = s
			batch = append(batch, s)
		}
		for name := range w.sent {
			if _, ok := seen[name]; !ok {
				delete(w.sent, name)
				batch = append(batch, api.ServiceSummary{Kind: api.SummaryRemoved, Service: name, Index: index})
			}
		}
		if !w.opened {
			w.opened = true
			batch = append(batch, api.ServiceSummary{Kind: api.SummaryCurrent, Index: index})
		}
		if len(batch) > 0 {
			return batch, nil
		}
	}
}

// wait returns once an entry after the last read was applied and the
// coalescing delay passed, or after a few seconds without one (a snapshot
// installed from the leader moves the state without an apply), or with an
// error when ctx ends or the voter stops.
func (w *ServiceWatch) wait(ctx context.Context) error {
	waitCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-w.ended:
			cancel()
		case <-waitCtx.Done():
		}
	}()
	w.v.waitApplied(waitCtx, w.index+1)
	// The coalescing delay; an end that came during the wait above is
	// ready at once, before the new timer can fire.
	t := time.NewTimer(serviceListCoalesce)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-w.ended:
		return ErrShutdown
	case <-w.v.stopping:
		return ErrShutdown
	case <-w.n.closing:
		return ErrShutdown
	case <-t.C:
		return nil
	}
}
