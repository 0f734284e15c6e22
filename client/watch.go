package client

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/discoverd/discoverd/api"
)

// streamIdleTimeout: the server sends a comment line on a stream silent for
// 30 s, so a stream silent for longer than this is taken as dead.
const streamIdleTimeout = 75 * time.Second

// staleAcceptAfter is how long a reconnecting watcher refuses the state of
// servers that are behind its own view (a restarted node still replaying its
// log) before it accepts it anyway (a cluster rebuilt from scratch restarts
// its indexes).
const staleAcceptAfter = 10 * time.Second

// maxReconnectRound caps the reconnect backoff (at retryCap).
const maxReconnectRound = 8

// leaderKinds are the kinds of a leader stream (GET .../leader).
var leaderKinds = api.Mask(api.EventLeader, api.EventCurrent, api.EventResync)

// view is a watcher's picture of a service: what the events it has passed
// on add up to.
type view struct {
	insts  map[string]*api.Instance
	leader *api.Instance
	meta   *api.ServiceMeta
	index  uint64
}

// newView builds the view a stream's current-state prelude describes.
func newView(prelude []api.Event, index uint64) *view {
	v := &view{insts: make(map[string]*api.Instance), index: index}
	for _, ev := range prelude {
		switch ev.Kind {
		case api.EventUp, api.EventUpdate:
			if ev.Instance != nil {
				v.insts[ev.Instance.ID] = ev.Instance
			}
		case api.EventLeader:
			v.leader = ev.Instance
		case api.EventServiceMeta:
			v.meta = ev.ServiceMeta
		}
	}
	return v
}

// sameLeadership reports whether a and b are the same leadership: the same
// instance with the same index (its fencing token), or both none.
func sameLeadership(a, b *api.Instance) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	return a.ID == b.ID && a.Index == b.Index
}

func sameMeta(a, b *api.ServiceMeta) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	return a.Index == b.Index && string(a.Data) == string(b.Data)
}

func byIndex(m map[string]*api.Instance) []*api.Instance {
	out := make([]*api.Instance, 0, len(m))
	for _, inst := range m {
		out = append(out, inst)
	}
	slices.SortFunc(out, func(a, b *api.Instance) int {
		if a.Index != b.Index {
			if a.Index < b.Index {
				return -1
			}
			return 1
		}
		return strings.Compare(a.ID, b.ID)
	})
	return out
}

// diff returns the events that turn view a into view b, with index as
// their index: downs (oldest first), then ups and updates (oldest first),
// then leader, then service_meta. An instance whose index changed was
// registered anew: it goes down and comes up again.
func diff(service string, kinds api.KindMask, a, b *view, index uint64) []api.Event {
	var out []api.Event
	ev := func(kind api.EventKind, inst *api.Instance) api.Event {
		return api.Event{Service: service, Kind: kind, Instance: inst, Index: index}
	}
	if kinds.Has(api.EventUp) {
		for _, old := range byIndex(a.insts) {
			if cur, ok := b.insts[old.ID]; !ok || cur.Index != old.Index {
				out = append(out, ev(api.EventDown, old))
			}
		}
		for _, cur := range byIndex(b.insts) {
			old, ok := a.insts[cur.ID]
			switch {
			case !ok || old.Index != cur.Index:
				out = append(out, ev(api.EventUp, cur))
			case !old.SameRegistration(cur):
				out = append(out, ev(api.EventUpdate, cur))
			}
		}
	}
	if kinds.Has(api.EventLeader) && !sameLeadership(a.leader, b.leader) {
		out = append(out, ev(api.EventLeader, b.leader))
	}
	if kinds.Has(api.EventServiceMeta) && b.meta != nil && !sameMeta(a.meta, b.meta) {
		out = append(out, api.Event{Service: service, Kind: api.EventServiceMeta, ServiceMeta: b.meta, Index: index})
	}
	return out
}

// Watcher is a stream of one service's events that survives disconnects,
// server restarts and failover. It implements api.Stream.
//
// The first connection passes the server's current-state prelude through:
// one up per instance, the leader event when there is a leader,
// service_meta when the service has meta, then current. After that come the
// live events. A service that does not exist yet is reported as empty
// (current alone), and its events follow once it is created.
//
// When the stream breaks, the watcher reconnects (to any of the client's
// servers, with backoff) and reconciles its view with the new stream's
// prelude: it sends down for instances that are gone, up for new ones (an
// instance registered anew, with a new index, goes down then up), update
// for changed ones, leader if the leadership changed and service_meta if
// the meta changed, each with the new prelude's index; it sends nothing that
// the caller already knows, and no second current. A resync event from the
// server is handled the same way. So the events received always add up to
// the server's state. A server whose state is behind what the watcher has
// already seen (a node restarting and still replaying its log) is not
// believed: the watcher tries again until one has caught up.
//
// If the service is removed, the watcher sends the downs and leader event
// of the removal and keeps watching: the service may be created again.
// Meta has no removal event: a removed service's meta is simply not
// reported again.
//
// Events must be read: the watcher does not buffer without bound, and a
// server closes a stream that falls too far behind (the watcher then
// reconnects and reconciles, so nothing is lost but intermediate states).
// The instances in events are shared and must not be modified.
type Watcher struct {
	c       *Client
	service string
	kinds   api.KindMask
	events  chan api.Event
	ctx     context.Context
	cancel  context.CancelFunc
	done    chan struct{}

	mu     sync.Mutex
	err    error
	closed bool
	cur    session // the open session, for tests

	// Owned by the run goroutine.
	view       *view
	staleSince time.Time
}

// Watch opens a stream of every event of service (see Watcher). It returns
// once a server has accepted the stream. The service need not exist yet: it
// is then reported as empty until it is created (a server that answers 404
// for such a stream, as older ones did, gives an object_not_found error).
// The watcher ends when ctx ends or it is closed.
//
// With WithNATS, the live events come from NATS (discoverd.events.{service}.*)
// while NATS is connected, and from the HTTP stream otherwise; the current
// state is read over HTTP in both cases.
func (c *Client) Watch(ctx context.Context, service string) (*Watcher, error) {
	return c.watch(ctx, service, api.AllKinds)
}

func (c *Client) watch(ctx context.Context, service string, kinds api.KindMask) (*Watcher, error) {
	if err := api.ValidateServiceName(service); err != nil {
		return nil, err
	}
	wctx, cancel := context.WithCancel(ctx)
	w := &Watcher{
		c:       c,
		service: service,
		kinds:   kinds,
		events:  make(chan api.Event, 64),
		ctx:     wctx,
		cancel:  cancel,
		done:    make(chan struct{}),
	}
	sess, err := w.connect(wctx, retryOpts{})
	if err != nil {
		cancel()
		var g *goneError
		if errors.As(err, &g) {
			return nil, g.err
		}
		return nil, err
	}
	go w.run(sess)
	return w, nil
}

// Events yields the events. It is closed when the watcher ends.
func (w *Watcher) Events() <-chan api.Event { return w.events }

// Err says why the watcher ended: nil after Close, the context's error when
// its context ended. It is nil while the watcher runs.
func (w *Watcher) Err() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}

// Done is closed when the watcher has ended (and Events is closed).
func (w *Watcher) Done() <-chan struct{} { return w.done }

// Close ends the watcher and waits for it to stop.
func (w *Watcher) Close() {
	w.mu.Lock()
	w.closed = true
	w.mu.Unlock()
	w.cancel()
	<-w.done
}

// Service is the watched service.
func (w *Watcher) Service() string { return w.service }

func (w *Watcher) finish() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.closed {
		w.err = context.Cause(w.ctx)
	}
}

func (w *Watcher) setSession(s session) {
	w.mu.Lock()
	w.cur = s
	w.mu.Unlock()
}

// connectedSession is the open session, nil between sessions.
func (w *Watcher) connectedSession() session {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.cur
}

// session is one connection's worth of events: a prelude, then live events.
type session interface {
	next() (api.Event, error)
	close()
}

// connect opens a session: over NATS when the client has a connected NATS
// connection, else over HTTP.
func (w *Watcher) connect(ctx context.Context, o retryOpts) (session, error) {
	if w.c.nats.enabled {
		// Taken before looking at the connection, so that a connection
		// made in between still ends an HTTP session.
		gen := w.c.natsGeneration()
		if nc := w.c.natsConn(); nc != nil && nc.IsConnected() {
			s, err := w.c.newNATSSession(ctx, w.service, w.kinds, o)
			if err == nil {
				return s, nil
			}
			if !retryable(err) {
				return nil, err
			}
		}
		// Over HTTP for now, but back to NATS when it reconnects.
		s, err := w.c.openSSE(ctx, w.service, w.kinds, "", o)
		if err != nil {
			return nil, err
		}
		go func() {
			select {
			case <-gen:
				s.close()
			case <-s.closed:
			}
		}()
		return s, nil
	}
	return w.c.openSSE(ctx, w.service, w.kinds, "", o)
}

func (w *Watcher) run(sess session) {
	defer close(w.done)
	defer close(w.events)
	round := 0
	for {
		if sess != nil {
			opened := time.Now()
			w.setSession(sess)
			_ = w.consume(sess)
			w.setSession(nil)
			sess.close()
			sess = nil
			if time.Since(opened) > 10*time.Second {
				round = 0 // it was a healthy connection
			}
		}
		if w.ctx.Err() != nil {
			w.finish()
			return
		}
		if err := sleep(w.ctx, backoff(round)); err != nil {
			w.finish()
			return
		}
		round = min(round+1, maxReconnectRound)
		s, err := w.connect(w.ctx, retryOpts{onePass: true})
		if err != nil {
			var g *goneError
			if errors.As(err, &g) {
				// The service does not exist (any more): reconcile with
				// an empty state, unless the server is behind us.
				_ = w.reconcile(nil, g.index)
			}
			continue
		}
		sess = s
	}
}

// consume reads one session until it ends.
func (w *Watcher) consume(sess session) error {
	var prelude []api.Event
	inPrelude := true
	for {
		ev, err := sess.next()
		if err != nil {
			return err
		}
		switch {
		case ev.Kind == api.EventResync:
			inPrelude, prelude = true, prelude[:0]
		case inPrelude && ev.Kind == api.EventCurrent:
			if err := w.reconcile(prelude, ev.Index); err != nil {
				return err
			}
			inPrelude, prelude = false, nil
		case inPrelude:
			prelude = append(prelude, ev)
		case ev.Kind == api.EventCurrent:
			// Only a prelude ends with current.
		default:
			if err := w.apply(ev); err != nil {
				return err
			}
		}
	}
}

// reconcile takes a new current state: the first one is passed through as
// it is; later ones as the difference with the view.
func (w *Watcher) reconcile(prelude []api.Event, index uint64) error {
	if w.view == nil {
		w.view = newView(prelude, index)
		for _, ev := range prelude {
			if err := w.emit(ev); err != nil {
				return err
			}
		}
		return w.emit(api.Event{Service: w.service, Kind: api.EventCurrent, Index: index})
	}
	if index < w.view.index {
		if w.staleSince.IsZero() {
			w.staleSince = time.Now()
		}
		if time.Since(w.staleSince) < staleAcceptAfter {
			return &api.Error{Code: api.CodeUnavailable, Retry: true, Message: fmt.Sprintf(
				"the server's state (index %d) is behind what the watcher has seen (index %d)", index, w.view.index)}
		}
	}
	w.staleSince = time.Time{}
	nv := newView(prelude, index)
	events := diff(w.service, w.kinds, w.view, nv, index)
	w.view = nv
	for _, ev := range events {
		if err := w.emit(ev); err != nil {
			return err
		}
	}
	return nil
}

// apply takes a live event into the view and passes it on, unless it
// changes nothing (a duplicate).
func (w *Watcher) apply(ev api.Event) error {
	v := w.view
	if ev.Index > v.index {
		v.index = ev.Index
	}
	switch ev.Kind {
	case api.EventUp, api.EventUpdate:
		inst := ev.Instance
		if inst == nil {
			return nil
		}
		if old, ok := v.insts[inst.ID]; ok && old.Index == inst.Index && old.SameRegistration(inst) {
			return nil
		}
		v.insts[inst.ID] = inst
		if v.leader != nil && v.leader.ID == inst.ID && v.leader.Index == inst.Index {
			v.leader = inst // an update of the leader is no new leadership
		}
	case api.EventDown:
		inst := ev.Instance
		if inst == nil {
			return nil
		}
		if w.kinds.Has(api.EventUp) {
			if _, ok := v.insts[inst.ID]; !ok {
				return nil
			}
			delete(v.insts, inst.ID)
		}
	case api.EventLeader:
		if sameLeadership(v.leader, ev.Instance) {
			return nil
		}
		v.leader = ev.Instance
	case api.EventServiceMeta:
		if ev.ServiceMeta == nil || sameMeta(v.meta, ev.ServiceMeta) {
			return nil
		}
		v.meta = ev.ServiceMeta
	}
	return w.emit(ev)
}

func (w *Watcher) emit(ev api.Event) error {
	select {
	case w.events <- ev:
		return nil
	case <-w.ctx.Done():
		return w.ctx.Err()
	}
}

// goneError is an object_not_found answer to a stream request, with the
// answering server's index.
type goneError struct {
	err   *api.Error
	index uint64
}

func (g *goneError) Error() string { return g.err.Error() }
func (g *goneError) Unwrap() error { return g.err }

// sseSession is one HTTP event stream.
type sseSession struct {
	resp      *http.Response
	rd        *sseReader
	idle      *time.Timer
	closeOnce sync.Once
	closed    chan struct{}
}

func (s *sseSession) next() (api.Event, error) { return s.rd.next() }

func (s *sseSession) close() {
	s.closeOnce.Do(func() {
		s.idle.Stop()
		s.resp.Body.Close()
		close(s.closed)
	})
}

// streamPath is the route of a stream of the given kinds.
func streamPath(service string, kinds api.KindMask) string {
	if kinds == leaderKinds {
		return servicePath(service) + "/leader"
	}
	return servicePath(service)
}

// openSSE opens an HTTP event stream of service. An unknown service is a
// *goneError.
func (c *Client) openSSE(ctx context.Context, service string, kinds api.KindMask, query string, o retryOpts) (*sseSession, error) {
	r := &request{method: "GET", path: streamPath(service, kinds), query: query, accept: sseContentType}
	var sess *sseSession
	err := c.retry(ctx, o, func(ctx context.Context, server string) error {
		resp, index, err := c.roundTrip(ctx, server, r)
		if err != nil {
			if IsNotFound(err) {
				return &goneError{err: api.AsError(err), index: index}
			}
			return err
		}
		if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, sseContentType) {
			resp.Body.Close()
			return &api.Error{Code: api.CodeUnknown, Message: fmt.Sprintf(
				"GET %s%s answered with Content-Type %q, not an event stream", server, r.path, ct)}
		}
		s := &sseSession{resp: resp, closed: make(chan struct{})}
		s.idle = time.AfterFunc(streamIdleTimeout, func() { resp.Body.Close() })
		s.rd = newSSEReader(resp.Body, func() { s.idle.Reset(streamIdleTimeout) })
		sess = s
		return nil
	})
	if err != nil {
		return nil, err
	}
	return sess, nil
}

// readPreludeEvents reads the current-state prelude of a new stream (without
// its current event, whose index it returns), then closes the stream.
func (c *Client) readPreludeEvents(ctx context.Context, service string, kinds api.KindMask, query string, o retryOpts) ([]api.Event, uint64, error) {
	for attempt := 1; ; attempt++ {
		s, err := c.openSSE(ctx, service, kinds, query, o)
		if err != nil {
			var g *goneError
			if errors.As(err, &g) {
				return nil, 0, g.err
			}
			return nil, 0, err
		}
		var prelude []api.Event
		for {
			ev, err := s.next()
			if err != nil {
				s.close()
				if ctx.Err() != nil {
					return nil, 0, ctx.Err()
				}
				break // the stream broke during its prelude: open another
			}
			if ev.Kind == api.EventResync {
				prelude = prelude[:0]
				continue
			}
			if ev.Kind == api.EventCurrent {
				s.close()
				return prelude, ev.Index, nil
			}
			prelude = append(prelude, ev)
		}
		if attempt == 3 {
			return nil, 0, &api.Error{Code: api.CodeUnavailable, Retry: true, Message: fmt.Sprintf(
				"the event stream of service %q broke %d times before its current state was read", service, attempt)}
		}
		if err := sleep(ctx, backoff(attempt)); err != nil {
			return nil, 0, err
		}
	}
}
