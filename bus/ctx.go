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
//
// For the same reason its deadline is fixed, timeout from then, only when
// the handler first asks for it (Done, Deadline or Err): reading the clock
// twice per call (here and in release) was a quarter of a heartbeat's cost
// in the subscriber on a machine with a slow clock source. What the handler
// does before it first looks at its context is in-memory work (decoding,
// a table lookup), so the wait it bounds is bounded all the same.
type callContext struct {
	parent  context.Context
	timeout time.Duration

	mu sync.Mutex
	// deadline is zero until the handler first asks for it.
	deadline time.Time
	inner    context.Context // built by Done
	cancel   context.CancelFunc
	released bool
	// expired says the deadline had passed when the call was released.
	expired bool
}

func newCallContext(parent context.Context, timeout time.Duration) *callContext {
	return &callContext{parent: parent, timeout: timeout}
}

// deadlineLocked fixes the deadline on first use; c.mu is held.
func (c *callContext) deadlineLocked() time.Time {
	if c.deadline.IsZero() {
		c.deadline = time.Now().Add(c.timeout)
	}
	return c.deadline
}

func (c *callContext) Deadline() (time.Time, bool) {
	c.mu.Lock()
	own := c.deadlineLocked()
	c.mu.Unlock()
	if d, ok := c.parent.Deadline(); ok && d.Before(own) {
		return d, true
	}
	return own, true
}

func (c *callContext) Value(key any) any { return c.parent.Value(key) }

func (c *callContext) Done() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.inner == nil {
		c.inner, c.cancel = context.WithDeadline(c.parent, c.deadlineLocked())
		if c.released {
			c.cancel()
		}
	}
	return c.inner.Done()
}

func (c *callContext) Err() error {
	c.mu.Lock()
	inner, released, expired := c.inner, c.released, c.expired
	var deadline time.Time
	if inner == nil && !released {
		deadline = c.deadlineLocked()
	}
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
	if !time.Now().Before(deadline) {
		return context.DeadlineExceeded
	}
	return nil
}

// release ends the call, as a context's cancel function does.
func (c *callContext) release() {
	c.mu.Lock()
	if !c.released {
		c.released = true
		// A deadline nobody asked for cannot have been missed.
		c.expired = !c.deadline.IsZero() && !time.Now().Before(c.deadline)
	}
	cancel := c.cancel
	c.mu.Unlock()
	if cancel != nil {
		cancel()
	}
}
