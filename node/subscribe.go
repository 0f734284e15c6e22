package node

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/discoverd/discoverd/api"
)

// Errors a stream can end with.
var (
	// ErrSlowSubscriber ends a stream whose reader fell so far behind that its
	// buffer filled: Apply never waits for a subscriber.
	ErrSlowSubscriber = api.Errorf(api.CodeUnavailable, "event stream closed: the subscriber fell behind by more than %d events; reconnect to resync", subscriberBuffer)
	// ErrShutdown ends every stream when the node shuts down.
	ErrShutdown = api.Errorf(api.CodeUnavailable, "event stream closed: the node is shutting down")
)

// subscriberBuffer is how many live events a subscriber may fall behind
// before it is closed.
const subscriberBuffer = 1024

// historySize is how many recent events a node keeps for streams that resume
// with Last-Event-ID.
const historySize = 8192

// Subscription is one open stream of a service's events.
//
// Its events wait in queue, which grows as events arrive and shrinks back
// once they are taken: an idle subscription holds no buffer, where a
// channel of subscriberBuffer events would hold 56 KiB each, and a node
// holds many thousands of them.
type Subscription struct {
	hub     *hub
	service string
	kinds   api.KindMask
	// ready has room for one signal: events wait, or the stream ended.
	ready chan struct{}
	// notify, once set, is called instead of signalling ready: a
	// transport that writes many streams from a few goroutines learns
	// which are ready without a goroutine waiting on each.
	notify atomic.Pointer[func()]

	mu     sync.Mutex
	queue  []api.Event
	limit  int // the most events that may wait: the first ones + subscriberBuffer
	closed bool
	err    error
}

// keptQueue is the capacity a taken queue keeps, so that a stream that
// gets one event now and then does not allocate for each; a larger one
// (after a burst) is dropped.
const keptQueue = 4

// Ready is signalled when events wait or the stream has ended.
func (s *Subscription) Ready() <-chan struct{} { return s.ready }

// Take appends the waiting events to dst and reports whether the stream is
// still open.
func (s *Subscription) Take(dst []api.Event) ([]api.Event, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	dst = append(dst, s.queue...)
	if cap(s.queue) > keptQueue {
		s.queue = nil
	} else {
		clear(s.queue) // the instances they point to may go
		s.queue = s.queue[:0]
	}
	return dst, !s.closed
}

// Written tells the node that the transport wrote the events it took
// into the stream's socket (for the fan-out time in metrics).
func (s *Subscription) Written() { s.hub.lastWrite.Store(time.Now().UnixNano()) }

// Err says why the stream ended (nil when it was closed by its reader).
func (s *Subscription) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// Close ends the stream.
func (s *Subscription) Close() { s.hub.remove(s, nil) }

// send queues ev without ever blocking; it reports false when the
// subscriber is too far behind (and must be closed) or already closed, and
// first when ev is the only event waiting: the reader must then be
// signalled (it was signalled already for any event waiting before).
func (s *Subscription) send(ev *api.Event) (ok, first bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || len(s.queue) >= s.limit {
		return false, false
	}
	s.queue = append(s.queue, *ev)
	return true, len(s.queue) == 1
}

// Notify makes the stream call fn, instead of signalling Ready, each time
// events start to wait or the stream ends; if some wait already, or it has
// ended, fn is called at once. fn runs with the node's fan-out lock held:
// it must not block nor call back into the stream (Take, Close); it is
// meant to queue the stream for a writer.
func (s *Subscription) Notify(fn func()) {
	s.mu.Lock()
	s.notify.Store(&fn)
	pending := len(s.queue) > 0 || s.closed
	s.mu.Unlock()
	if pending {
		fn()
	}
}

// signal wakes the reader. It needs no lock: the ready channel is never
// closed and notify is an atomic.
func (s *Subscription) signal() {
	if fn := s.notify.Load(); fn != nil {
		(*fn)()
		return
	}
	select {
	case s.ready <- struct{}{}:
	default:
	}
}

// hub fans applied events out to subscriptions and keeps recent history.
// It is driven by the state machine's sink, under the FSM's write lock, so
// events reach every subscriber in log order and a new subscription can be
// added atomically with the state read that opens it.
type hub struct {
	mu   sync.RWMutex
	subs map[string]map[*Subscription]struct{}
	// all receives every event of every service (the NATS publisher).
	all []func(*api.Event)
	// wake is publish's list of subscriptions to signal, kept between
	// entries so that a fan-out to many streams does not allocate it.
	wake []*Subscription

	// history is a ring of the last historySize events; floor is the index at
	// or below which events may be missing from it.
	history []api.Event
	next    int
	full    bool
	floor   uint64

	// open and closedSlow are for metrics. They change when a stream opens
	// or closes, never per event, and are atomics so that a scrape reads
	// them without taking mu from the sink.
	open       atomic.Int64
	closedSlow atomic.Uint64

	// ended is closed, and replaced, each time closeAll ends every stream:
	// streams that are not subscriptions (the service list's) watch it.
	ended chan struct{}
	// published is when events were last published to subscribers and
	// lastWrite when a transport last wrote events of a stream out (Unix
	// nanos): while streams keep up, lastWrite - published is how long the
	// last fan-out took to reach every stream's socket, for metrics.
	published atomic.Int64
	lastWrite atomic.Int64
}

// fanoutTime is how long the last fan-out took from publish to its last
// write into a stream's socket, 0 before any.
func (h *hub) fanoutTime() time.Duration {
	p, w := h.published.Load(), h.lastWrite.Load()
	if p == 0 || w < p {
		return 0
	}
	return time.Duration(w - p)
}

func newHub() *hub {
	return &hub{subs: make(map[string]map[*Subscription]struct{}), history: make([]api.Event, historySize), ended: make(chan struct{})}
}

// publish is called from the FSM sink with the events of one entry.
func (h *hub) publish(events []api.Event, restored bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.subs) > 0 {
		h.published.Store(time.Now().UnixNano())
	}
	wake := h.wake[:0]
	for i := range events {
		ev := &events[i]
		if restored {
			// A restore's events stand for history this node never saw, so no
			// stream may resume from before them.
			if ev.Index > h.floor {
				h.floor = ev.Index
			}
		} else {
			h.record(ev)
		}
		for _, fn := range h.all {
			fn(ev)
		}
		for sub := range h.subs[ev.Service] {
			if !sub.kinds.Has(ev.Kind) {
				continue
			}
			ok, first := sub.send(ev)
			if !ok {
				h.closeLocked(sub, ErrSlowSubscriber)
			} else if first {
				wake = append(wake, sub)
			}
		}
	}
	// The readers are signalled once every event of the entry waits, so
	// that a reader takes them together (a leader's down and the new
	// leader in one write) rather than the first alone.
	for _, sub := range wake {
		sub.signal()
	}
	clear(wake)
	h.wake = wake[:0]
}

func (h *hub) record(ev *api.Event) {
	if h.full {
		if old := h.history[h.next].Index; old > h.floor {
			h.floor = old
		}
	}
	h.history[h.next] = *ev
	h.next++
	if h.next == len(h.history) {
		h.next = 0
		h.full = true
	}
}

// since returns the held events of service after index, or false when some
// may be missing.
func (h *hub) since(service string, kinds api.KindMask, index uint64) ([]api.Event, bool) {
	if index < h.floor {
		return nil, false
	}
	var out []api.Event
	collect := func(evs []api.Event) {
		for i := range evs {
			if ev := &evs[i]; ev.Index > index && ev.Service == service && kinds.Has(ev.Kind) {
				out = append(out, *ev)
			}
		}
	}
	if h.full {
		collect(h.history[h.next:])
	}
	collect(h.history[:h.next])
	return out, true
}

// add registers a subscription whose first events are initial. The caller
// holds the FSM read lock, so no event is published between the state read
// that made initial and this registration.
func (h *hub) add(service string, kinds api.KindMask, initial func(resumeOK func(uint64) ([]api.Event, bool)) []api.Event) *Subscription {
	h.mu.Lock()
	defer h.mu.Unlock()
	first := initial(func(index uint64) ([]api.Event, bool) { return h.since(service, kinds, index) })
	sub := &Subscription{hub: h, service: service, kinds: kinds, ready: make(chan struct{}, 1),
		queue: first, limit: len(first) + subscriberBuffer}
	if len(first) > 0 {
		sub.signal()
	}
	m := h.subs[service]
	if m == nil {
		m = make(map[*Subscription]struct{})
		h.subs[service] = m
	}
	m[sub] = struct{}{}
	h.open.Add(1)
	return sub
}

func (h *hub) remove(sub *Subscription, err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closeLocked(sub, err)
}

func (h *hub) closeLocked(sub *Subscription, err error) {
	sub.mu.Lock()
	defer sub.mu.Unlock()
	if sub.closed {
		return
	}
	sub.closed = true
	sub.err = err
	sub.signal()
	h.open.Add(-1)
	if err == ErrSlowSubscriber {
		h.closedSlow.Add(1)
	}
	if m := h.subs[sub.service]; m != nil {
		delete(m, sub)
		if len(m) == 0 {
			delete(h.subs, sub.service)
		}
	}
}

// closeAll ends every stream with err.
//
// Every stream is marked closed under the lock, and only then are their
// readers woken: with 100,000 streams, readers woken one by one inside the
// loop would each take the CPU to write their last event while the loop
// waits its turn, and a node shutting down would take many seconds.
func (h *hub) closeAll(err error) {
	h.mu.Lock()
	var subs []*Subscription
	for _, m := range h.subs {
		for sub := range m {
			sub.mu.Lock()
			if !sub.closed {
				sub.closed = true
				sub.err = err
				subs = append(subs, sub)
			}
			sub.mu.Unlock()
		}
	}
	clear(h.subs)
	h.open.Add(-int64(len(subs)))
	close(h.ended)
	h.ended = make(chan struct{})
	h.mu.Unlock()
	for _, sub := range subs {
		// The ready channel is never closed and notify is an atomic, so
		// no lock is needed to signal a stream.
		sub.signal()
	}
}

// endedChan is closed the next time closeAll ends every stream.
func (h *hub) endedChan() <-chan struct{} {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return h.ended
}

// onEvent adds a callback that sees every event of every service, in log
// order, from the sink. It must not block.
func (h *hub) onEvent(fn func(*api.Event)) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.all = append(h.all, fn)
}
