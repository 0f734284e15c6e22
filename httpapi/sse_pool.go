package httpapi

import (
	"errors"
	"math"
	"net"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/discoverd/discoverd/api"
)

// rawWriteTimeout bounds one write of a pooled HTTP/1.1 stream, so that a
// client that stopped reading cannot hold one of the few writers: past it
// the stream gets a goroutine of its own, which writes without a deadline
// (see rawStream.detach). A write waits only when the client's socket
// buffer is full, which a client that keeps reading does not reach with
// events of a few hundred bytes; and being moved to a goroutine of its own
// costs a stream only that goroutine. So the bound is short: a client
// holding 1,024 stuck streams (the per-client limit) costs the writers at
// most 1,024 × 20 ms, once.
const rawWriteTimeout = 20 * time.Millisecond

// rawPool writes the events of hijacked HTTP/1.1 streams from a few
// goroutines instead of one per stream. A fan-out to n streams then costs
// n socket writes, not n goroutine wake-ups, and an idle stream holds no
// writing goroutine (only the one that waits for its client to go away).
//
// A stream enters the ready queue when its subscription notifies it
// (events wait, or it ended) or when its keep-alive is due. The writers
// run only while streams are queued, at most one per CPU.
type rawPool struct {
	keepAlive time.Duration

	mu      sync.Mutex
	queue   []*rawStream
	writers int
	// streams are the open streams written without a goroutine of their
	// own (pooled HTTP/1.1 streams and HTTP/2 streams written by their
	// connection), for their keep-alives; the sweeper runs while there are
	// some.
	streams  map[keptAlive]struct{}
	sweeping bool
}

// keptAlive is a stream the sweeper sends keep-alives.
type keptAlive interface {
	// idleSince is when the stream was last written (Unix nanos); a
	// stream that keeps its own keep-alive says math.MaxInt64.
	idleSince() int64
	// askKeepAlive has a keep-alive written unless something else is.
	askKeepAlive()
}

func newRawPool(keepAlive time.Duration) *rawPool {
	return &rawPool{keepAlive: keepAlive, streams: make(map[keptAlive]struct{})}
}

// track adds a stream to the keep-alive sweep, untrack takes it out.
func (p *rawPool) track(s keptAlive) {
	p.mu.Lock()
	p.streams[s] = struct{}{}
	if !p.sweeping {
		p.sweeping = true
		go p.sweep()
	}
	p.mu.Unlock()
}

func (p *rawPool) untrack(s keptAlive) {
	p.mu.Lock()
	delete(p.streams, s)
	p.mu.Unlock()
}

// maxRawWriters is how many goroutines may write pooled streams at once.
func maxRawWriters() int { return max(2, runtime.GOMAXPROCS(0)) }

// The states of a pooled stream: only the writer that moved it from
// queued to running writes it, so its events go out in order.
const (
	rawIdle    uint32 = iota
	rawQueued         // in the pool's queue
	rawRunning        // a writer has it
	rawDirty          // a writer has it and it was notified since: queue it again
)

// rawStream is one pooled HTTP/1.1 event stream.
type rawStream struct {
	eventTaker
	pool  *rawPool
	conn  net.Conn
	state atomic.Uint32
	// lastWrite is when something was last written (Unix nanos), for
	// the keep-alive.
	lastWrite atomic.Int64
	// detached is set once the stream has its own goroutine (after a
	// write ran into rawWriteTimeout); wake then signals ch.
	detached atomic.Bool
	ch       chan struct{}
	done     atomic.Bool
}

// add starts serving st on conn from the pool.
func (p *rawPool) add(conn net.Conn, st Stream, n notifier) {
	rs := &rawStream{eventTaker: eventTaker{st: st}, pool: p, conn: conn}
	rs.lastWrite.Store(time.Now().UnixNano())
	p.track(rs)
	n.Notify(rs.wake)
}

func (rs *rawStream) idleSince() int64 {
	if rs.detached.Load() {
		return math.MaxInt64 // its goroutine keeps its own keep-alive
	}
	return rs.lastWrite.Load()
}

func (rs *rawStream) askKeepAlive() {
	rs.keepAliveDue.Store(true)
	rs.wake()
}

// wake queues rs for a writer; it is called by the subscription with the
// node's fan-out lock held, so it only queues.
func (rs *rawStream) wake() {
	if rs.detached.Load() {
		select {
		case rs.ch <- struct{}{}:
		default:
		}
		return
	}
	for {
		switch s := rs.state.Load(); s {
		case rawIdle:
			if rs.state.CompareAndSwap(rawIdle, rawQueued) {
				rs.pool.push(rs)
				return
			}
		case rawRunning:
			if rs.state.CompareAndSwap(rawRunning, rawDirty) {
				return
			}
		default: // queued or dirty: a writer will take the news
			return
		}
	}
}

func (p *rawPool) push(rs *rawStream) {
	p.mu.Lock()
	p.queue = append(p.queue, rs)
	start := p.writers < maxRawWriters()
	if start {
		p.writers++
	}
	p.mu.Unlock()
	if start {
		go p.write()
	}
}

// write serves queued streams until the queue is empty.
func (p *rawPool) write() {
	var buf []byte
	for {
		p.mu.Lock()
		if len(p.queue) == 0 {
			p.writers--
			if cap(p.queue) > 1024 {
				p.queue = nil // after a large fan-out, let the memory go
			}
			p.mu.Unlock()
			return
		}
		rs := p.queue[0]
		p.queue[0] = nil
		p.queue = p.queue[1:]
		p.mu.Unlock()
		buf = rs.serve(buf[:0])
		if cap(buf) > maxPooledBuf {
			buf = nil
		}
	}
}

// serve writes what rs has waiting, on a writer; buf is scratch space,
// returned for reuse.
func (rs *rawStream) serve(buf []byte) []byte {
	rs.state.Store(rawRunning)
	buf, open, n := rs.take(buf)
	if len(buf) > 0 {
		rs.conn.SetWriteDeadline(time.Now().Add(rawWriteTimeout))
		written, err := rs.conn.Write(buf)
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				rs.detach(append([]byte(nil), buf[written:]...), open)
				return buf
			}
			rs.finish()
			return buf
		}
		rs.lastWrite.Store(time.Now().UnixNano())
		reportWritten(rs.st, n)
	}
	if !open {
		rs.finish()
		return buf
	}
	if !rs.state.CompareAndSwap(rawRunning, rawIdle) {
		// Notified while it was written: queue it again, behind the
		// others, rather than loop on one busy stream.
		rs.state.Store(rawQueued)
		rs.pool.push(rs)
	}
	return buf
}

// eventTaker takes the waiting events of a stream that is written
// without a goroutine of its own (a pooled HTTP/1.1 stream, an HTTP/2
// stream written by its connection) as SSE bytes.
type eventTaker struct {
	st Stream
	// keepAliveDue asks take for a keep-alive if it has nothing else.
	keepAliveDue atomic.Bool
	// evs is reused between takes, up to maxKeptEvents.
	evs []api.Event
}

// take appends to buf what the stream has to write (its waiting events,
// its final error, or a keep-alive) and reports whether the stream is
// still open and how many events it took.
func (t *eventTaker) take(buf []byte) ([]byte, bool, int) {
	evs, open := t.st.Take(t.evs[:0])
	start := len(buf)
	for i := range evs {
		buf = append(buf, sharedSSEEvent(&evs[i])...)
	}
	if !open {
		if err := t.st.Err(); err != nil {
			buf = appendSSEError(buf, api.AsError(err))
		}
	}
	if t.keepAliveDue.Swap(false) && len(buf) == start && open {
		buf = append(buf, sseKeepAlive...)
	}
	n := len(evs)
	clear(evs)
	if cap(evs) > maxKeptEvents {
		evs = nil
	}
	t.evs = evs[:0]
	return buf, open, n
}

// detach gives rs a goroutine of its own, which first writes pending: its
// client has not taken a write within rawWriteTimeout. If the stream has
// ended (open false), pending holds its last bytes, the error event
// included, and the goroutine ends after writing them. It is written
// without a deadline from then on, as net/http writes a stream, so that a
// client that reads again gets every event, or, if it fell too far behind,
// the error event that closed it.
func (rs *rawStream) detach(pending []byte, open bool) {
	rs.ch = make(chan struct{}, 1)
	rs.detached.Store(true)
	rs.conn.SetWriteDeadline(time.Time{})
	go rs.loop(pending, open)
}

// loop writes a detached stream until it ends.
func (rs *rawStream) loop(pending []byte, open bool) {
	defer rs.finish()
	if _, err := rs.conn.Write(pending); err != nil || !open {
		return
	}
	ticker := time.NewTicker(rs.pool.keepAlive)
	defer ticker.Stop()
	var buf []byte
	for {
		// A first pass without waiting: the stream may have been
		// notified while it was being detached.
		var n int
		buf, open, n = rs.take(buf[:0])
		if len(buf) > 0 {
			if _, err := rs.conn.Write(buf); err != nil {
				return
			}
			reportWritten(rs.st, n)
			ticker.Reset(rs.pool.keepAlive)
		}
		if !open {
			return
		}
		select {
		case <-rs.ch:
		case <-ticker.C:
			rs.keepAliveDue.Store(true)
		}
	}
}

// finish closes rs's connection and subscription, once.
func (rs *rawStream) finish() {
	if rs.done.Swap(true) {
		return
	}
	rs.conn.Close()
	rs.st.Close()
	rs.pool.untrack(rs)
}

// sweep queues the pooled streams whose keep-alive is due, every half
// keep-alive period, while there are any.
func (p *rawPool) sweep() {
	ticker := time.NewTicker(p.keepAlive / 2)
	defer ticker.Stop()
	var due []keptAlive
	for range ticker.C {
		cutoff := time.Now().Add(-p.keepAlive).UnixNano()
		p.mu.Lock()
		if len(p.streams) == 0 {
			p.sweeping = false
			p.mu.Unlock()
			return
		}
		for s := range p.streams {
			if s.idleSince() <= cutoff {
				due = append(due, s)
			}
		}
		p.mu.Unlock()
		for _, s := range due {
			s.askKeepAlive()
		}
		clear(due)
		due = due[:0]
	}
}

// notifier is a stream that can call back when it is ready, instead of
// signalling a channel (the node's subscriptions).
type notifier interface{ Notify(func()) }

// notifierOf returns st's notifier, looking through the wrapper that
// ends a stream when its token is revoked.
func notifierOf(st Stream) (notifier, bool) {
	if rs, ok := st.(*revocableStream); ok {
		st = rs.Stream
	}
	n, ok := st.(notifier)
	return n, ok
}
