package client

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/discoverd/discoverd/api"
)

// NATS subjects, spelled as the server's package bus spells them
// (bus.HeartbeatPrefix, bus.EventsPrefix). The client may not import a
// server package; a test checks that the two agree.
const (
	// natsHeartbeatPrefix + service: heartbeats, the JSON of an
	// api.Instance; with a reply subject the server answers api.OK or an
	// api.Error.
	natsHeartbeatPrefix = "discoverd.heartbeat."
	// natsEventsPrefix + service + "." + kind: events, the JSON of an
	// api.Event.
	natsEventsPrefix = "discoverd.events."
)

// DefaultNATSPort is the port WithNATS assumes on each server's host when it
// is given no URL (the daemon's default --nats-addr is 127.0.0.1:4222).
const DefaultNATSPort = "4222"

// DefaultNATSResync is how often a watcher fed by NATS re-reads the current
// state over HTTP (WithNATSResync).
const DefaultNATSResync = time.Minute

// natsEventBuffer is how many NATS events a watcher may have pending before
// NATS drops some (a drop makes it resync).
const natsEventBuffer = 8192

type natsConfig struct {
	enabled bool
	urls    []string
	resync  time.Duration
	opts    []nats.Option

	genMu sync.Mutex
	gen   chan struct{}
}

// WithNATS makes the client use NATS, given the URLs of NATS servers
// ("nats://10.0.0.1:4222" or "10.0.0.1:4222"); with none, port 4222 of
// each HTTP server's host. With it:
//
//   - a Heartbeater registers with a NATS request on
//     discoverd.heartbeat.{service} (answered {"ok": true} or with an
//     api.Error), then publishes its heartbeats there, sending every other
//     one as a request so that a failing server is noticed;
//   - a Watcher (and Leaders) subscribes to discoverd.events.{service}.* (or
//     .leader), reads the current state over HTTP (consistent) and applies
//     the NATS events after it. As core NATS may lose messages and event
//     indexes are global to the cluster (so a gap cannot always be seen),
//     it re-reads the state and reconciles on every NATS reconnect, when
//     NATS reports dropped messages, when an event's index goes backwards,
//     and every WithNATSResync interval.
//
// Whenever NATS is not connected, or a NATS request fails, the same
// Heartbeaters and Watchers use HTTP instead, and go back to NATS when it
// reconnects. The NATS connection is made on first use, and reconnects
// (to any of the URLs) for as long as the client is open.
func WithNATS(urls ...string) Option {
	return func(c *Client) {
		c.nats.enabled = true
		c.nats.urls = append(c.nats.urls, urls...)
	}
}

// WithNATSOptions adds nats.go options to the client's NATS connection
// (e.g. credentials or TLS). It implies WithNATS.
func WithNATSOptions(opts ...nats.Option) Option {
	return func(c *Client) {
		c.nats.enabled = true
		c.nats.opts = append(c.nats.opts, opts...)
	}
}

// WithNATSResync sets how often a watcher fed by NATS re-reads the current
// state over HTTP to repair any event NATS lost without a trace (default
// 1 minute; negative disables).
func WithNATSResync(d time.Duration) Option {
	return func(c *Client) { c.nats.resync = d }
}

// natsURLs are the NATS servers to connect to.
func (c *Client) natsURLs() []string {
	var out []string
	for _, u := range c.nats.urls {
		if u = strings.TrimSpace(u); u == "" {
			continue
		}
		if !strings.Contains(u, "://") {
			u = "nats://" + u
		}
		out = append(out, u)
	}
	if len(out) > 0 {
		return out
	}
	for _, s := range c.servers {
		host := "127.0.0.1"
		if u, err := url.Parse(s); err == nil && u.Hostname() != "" {
			host = u.Hostname()
		}
		u := "nats://" + net.JoinHostPort(host, DefaultNATSPort)
		if !slices.Contains(out, u) {
			out = append(out, u)
		}
	}
	return out
}

// natsConn returns the client's NATS connection, connecting it on first
// use; nil if NATS is off, the client is closed or the URLs are invalid.
// The connection may be disconnected (it keeps reconnecting).
func (c *Client) natsConn() *nats.Conn {
	if !c.nats.enabled {
		return nil
	}
	c.natsMu.Lock()
	defer c.natsMu.Unlock()
	if c.nc != nil || c.natsErr != nil || c.closed {
		return c.nc
	}
	bump := func(*nats.Conn) { c.bumpNATSGeneration() }
	opts := []nats.Option{
		nats.Name("discoverd-client"),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.ReconnectJitter(250*time.Millisecond, time.Second),
		nats.RetryOnFailedConnect(true),
		nats.Timeout(2 * time.Second),
		nats.ConnectHandler(bump),
		nats.ReconnectHandler(bump),
		nats.DisconnectErrHandler(func(nc *nats.Conn, _ error) { bump(nc) }),
		nats.ClosedHandler(bump),
		nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {
			// Slow consumers are seen through Subscription.Dropped.
		}),
	}
	if c.sec.tls != nil {
		opts = append(opts, nats.Secure(c.sec.tls.Clone()))
	}
	if c.sec.token != "" {
		opts = append(opts, nats.UserInfo(api.NATSTokenUser(c.sec.token), c.sec.token))
	}
	opts = append(opts, c.nats.opts...)
	nc, err := nats.Connect(strings.Join(c.natsURLs(), ","), opts...)
	if err != nil {
		c.natsErr = err
		return nil
	}
	c.nc = nc
	return nc
}

// natsGeneration returns a channel closed at the next change of the NATS
// connection's state (connected, disconnected, reconnected, closed).
func (c *Client) natsGeneration() <-chan struct{} {
	c.nats.genMu.Lock()
	defer c.nats.genMu.Unlock()
	if c.nats.gen == nil {
		c.nats.gen = make(chan struct{})
	}
	return c.nats.gen
}

func (c *Client) bumpNATSGeneration() {
	c.nats.genMu.Lock()
	defer c.nats.genMu.Unlock()
	if c.nats.gen != nil {
		close(c.nats.gen)
	}
	c.nats.gen = make(chan struct{})
}

// sendNATS sends one heartbeat over NATS: a request when confirm is set
// (the answer is awaited, within o.attemptTimeout when set), else a plain
// publish.
func (h *Heartbeater) sendNATS(ctx context.Context, nc *nats.Conn, in *api.Instance, confirm bool, o retryOpts) error {
	data, err := json.Marshal(in)
	if err != nil {
		return &api.Error{Code: api.CodeValidation, Message: fmt.Sprintf("encoding the instance: %v", err)}
	}
	subj := natsHeartbeatPrefix + h.service
	if !confirm {
		if err := nc.Publish(subj, data); err != nil {
			return &api.Error{Code: api.CodeUnavailable, Retry: true, Message: fmt.Sprintf("publishing a heartbeat on NATS: %v", err)}
		}
		return nil
	}
	rctx := ctx
	if o.attemptTimeout > 0 {
		var cancel context.CancelFunc
		rctx, cancel = context.WithTimeout(ctx, o.attemptTimeout)
		defer cancel()
	} else if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		rctx, cancel = context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
	}
	msg, err := nc.RequestWithContext(rctx, subj, data)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return &api.Error{Code: api.CodeUnavailable, Retry: true, Message: fmt.Sprintf("heartbeat request on NATS %s: %v", subj, err)}
	}
	return api.DecodeHeartbeatAnswer(msg.Data)
}

// natsSession feeds a watcher from NATS: the current state read over HTTP,
// then the NATS events after it, with a resync (a new current state) on
// every NATS reconnect, drop, index regression and resync interval.
type natsSession struct {
	c       *Client
	ctx     context.Context
	service string
	kinds   api.KindMask
	nc      *nats.Conn
	sub     *nats.Subscription
	msgs    chan *nats.Msg
	gen     <-chan struct{}
	resync  *time.Ticker
	tick    <-chan time.Time

	queue   []api.Event // prelude events to hand out first
	floor   uint64      // NATS events at or below it are in the state read
	last    uint64      // index of the last NATS event handed out
	dropped int
}

func (c *Client) newNATSSession(ctx context.Context, service string, kinds api.KindMask, o retryOpts) (*natsSession, error) {
	nc := c.natsConn()
	if nc == nil {
		return nil, &api.Error{Code: api.CodeUnavailable, Retry: true, Message: "no NATS connection"}
	}
	subj := natsEventsPrefix + service + ".*"
	if kinds == leaderKinds {
		subj = natsEventsPrefix + service + "." + string(api.EventLeader)
	}
	s := &natsSession{c: c, ctx: ctx, service: service, kinds: kinds, nc: nc, msgs: make(chan *nats.Msg, natsEventBuffer)}
	// Subscribe first, then read the state: every event after the state
	// read is then received.
	s.gen = c.natsGeneration()
	sub, err := nc.ChanSubscribe(subj, s.msgs)
	if err != nil {
		return nil, &api.Error{Code: api.CodeUnavailable, Retry: true, Message: fmt.Sprintf("subscribing to NATS %s: %v", subj, err)}
	}
	s.sub = sub
	fctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	err = nc.FlushWithContext(fctx)
	cancel()
	if err != nil {
		_ = sub.Unsubscribe()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, &api.Error{Code: api.CodeUnavailable, Retry: true, Message: fmt.Sprintf("subscribing to NATS %s: %v", subj, err)}
	}
	if err := s.readState(o, false); err != nil {
		_ = sub.Unsubscribe()
		return nil, err
	}
	resync := c.nats.resync
	if resync == 0 {
		resync = DefaultNATSResync
	}
	if resync > 0 {
		s.resync = time.NewTicker(resync)
		s.tick = s.resync.C
	}
	return s, nil
}

// readState reads the current state over HTTP, consistently (from the Raft
// leader's point of view, so that no event already published is missing
// from it), and queues it as a prelude (after a resync event if asked).
func (s *natsSession) readState(o retryOpts, resync bool) error {
	prelude, index, err := s.c.readPreludeEvents(s.ctx, s.service, s.kinds, "consistent=true", o)
	if err != nil {
		return err
	}
	if resync {
		s.queue = append(s.queue, api.Event{Service: s.service, Kind: api.EventResync, Index: index})
	}
	s.queue = append(s.queue, prelude...)
	s.queue = append(s.queue, api.Event{Service: s.service, Kind: api.EventCurrent, Index: index})
	s.floor, s.last = index, index
	if d, err := s.sub.Dropped(); err == nil {
		s.dropped = d
	}
	return nil
}

func (s *natsSession) doResync() error {
	s.gen = s.c.natsGeneration()
	if !s.nc.IsConnected() {
		// The watcher goes over HTTP until NATS is back.
		return &api.Error{Code: api.CodeUnavailable, Retry: true, Message: "NATS disconnected"}
	}
	return s.readState(retryOpts{onePass: true}, true)
}

func (s *natsSession) next() (api.Event, error) {
	for {
		if len(s.queue) > 0 {
			ev := s.queue[0]
			s.queue = s.queue[1:]
			return ev, nil
		}
		select {
		case <-s.ctx.Done():
			return api.Event{}, s.ctx.Err()
		case <-s.gen:
			if err := s.doResync(); err != nil {
				return api.Event{}, err
			}
		case <-s.tick:
			if err := s.doResync(); err != nil {
				return api.Event{}, err
			}
		case m := <-s.msgs:
			if d, err := s.sub.Dropped(); err == nil && d != s.dropped {
				if err := s.doResync(); err != nil {
					return api.Event{}, err
				}
				continue
			}
			var ev api.Event
			if err := json.Unmarshal(m.Data, &ev); err != nil || ev.Service != s.service {
				continue
			}
			if ev.Index <= s.floor {
				continue // already in the state read
			}
			if ev.Index < s.last {
				// Out of order: something was missed or replayed.
				if err := s.doResync(); err != nil {
					return api.Event{}, err
				}
				continue
			}
			s.last = ev.Index
			return ev, nil
		}
	}
}

func (s *natsSession) close() {
	if s.resync != nil {
		s.resync.Stop()
	}
	_ = s.sub.Unsubscribe()
}
