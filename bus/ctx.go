package bus

import (
	"context"
	"sync"
	"time"
)

// callContext is the context of one heartbeat handler call: done when its
// parent (the subscriber) is cancelled, when its deadline passes, or when the
// call has returned (release).
//
// It behaves as context.WithDeadline(parent, deadline) with its cancel
// called by release, but builds that context (a timer and three more
// allocations, ~40% of a heartbeat's cost in the subscriber) only if the
// handler asks for Done, as a handler that waits on something (a forward to
// the leader, a Raft apply) does; the common heartbeat, a table update,
// never does.
type callContext struct {
	parent   context.Context
	deadline time.Time

	mu       sync.Mutex
	inner    context.Context // built by Done
	cancel   context.CancelFunc
	released bool
	// expired says the deadline had passed when the call was released.
	expired bool
}

func newCallContext(parent context.Context, timeout time.Duration) *callContext {
	return &callContext{parent: parent, deadline: time.Now().Add(timeout)}
}

func (c *callContext) Deadline() (time.Time, bool) {
	if d, ok := c.parent.Deadline(); ok && d.Before(c.deadline) {
		return d, true
	}
	return c.deadline, true
}

func (c *callContext) Value(key any) any { return c.parent.Value(key) }

func (c *callContext) Done() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.inner == nil {
		c.inner, c.cancel = context.WithDeadline(c.parent, c.deadline)
		if c.released {
			c.cancel()
		}
	}
	return c.inner.Done()
}

func (c *callContext) Err() error {
	c.mu.Lock()
	inner, released, expired := c.inner, c.released, c.expired
	c.mu.Unlock()
	if inner != nil {
		return inner.Err()
	}
	if err := c.parent.Err(); err != nil {
		return err
	}
	if released {
		if expired {
			return context.DeadlineExceeded
		}
		return context.Canceled
	}
	if !time.Now().Before(c.deadline) {
		return context.DeadlineExceeded
	}
	return nil
}

// release ends the call, as a context's cancel function does.
func (c *callContext) release() {
	c.mu.Lock()
	if !c.released {
		c.released = true
		c.expired = !time.Now().Before(c.deadline)
	}
	cancel := c.cancel
	c.mu.Unlock()
	if cancel != nil {
		cancel()
	}
}
