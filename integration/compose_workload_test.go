//go:build compose

package integration

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/discoverd/discoverd/api"
	"github.com/discoverd/discoverd/client"
	"github.com/discoverd/discoverd/integration/history"
)

// composeNATSResync is how often the NATS watchers re-read the state over
// HTTP (client.WithNATSResync). Core NATS loses the events published while
// a route between NATS servers is down and the watcher's own connection
// stays up (a watcher on a node cut off from the others): nothing tells
// the watcher, the leader republishes only leader events when the route
// comes back, and only a resync repairs the rest of its view. With the
// default (1 minute) such a watcher stayed wrong for more than 30 s after
// the heal (seen in TestComposePartitionLeader), beyond the 10 s
// convergence bound, so the test uses a short one. See the report.
const composeNATSResync = 3 * time.Second

// composeWorkload is what the clients do during a scenario: instances
// registered and heartbeating (over HTTP through proxies and voters, and
// over NATS), instances coming and going, service meta compare-and-set
// writers, consistent readers, and watchers over SSE and NATS. Every HTTP
// operation is recorded (history.Recorder) for the checks; every node's own
// event stream is recorded too (rawStream), for the leader agreement check.
type composeWorkload struct {
	t        *testing.T
	c        *composeCluster
	rec      history.Recorder
	services []string
	ctx      context.Context
	cancel   context.CancelFunc

	clientNames []string
	clients     []*client.Client

	// HTTP clients with different server lists: through the proxies only,
	// and through every node in two orders.
	cProxy, cA, cB *client.Client
	cNATS          *client.Client // heartbeats over NATS
	cMeta1, cMeta2 *client.Client // consistent reads, meta writers
	cRead          *client.Client // consistent reads of the instances

	mu        sync.Mutex
	instances []*wlInstance
	watchers  []*wlWatcher
	raws      []*rawStream

	writers    sync.WaitGroup
	stopWrites chan struct{}
	background sync.WaitGroup
	churnN     int

	// Counts of client-level failures, for the report (failures during a
	// fault are expected; the checks say whether they were right).
	failMu   sync.Mutex
	failures map[string]int

	// checkTimeout bounds porcupine on one partition of the history.
	checkTimeout time.Duration

	stopOnce               sync.Once
	start, heal, finalRead time.Time
	// settled is when the cluster was seen converged after the heal.
	settled   time.Time
	converged time.Duration
	final     map[string]history.View
}

// wlInstance is one registered instance of the workload.
type wlInstance struct {
	service, id string
	client      string
	hb          *client.Heartbeater
	overNATS    bool
	// closed: the workload deregistered it (or tried to), or stopped its
	// heartbeats (then stopped is when).
	closed  bool
	stopped time.Time
}

// wlWatcher records the events a client watcher passed on.
type wlWatcher struct {
	name, service string
	w             *client.Watcher
	mu            sync.Mutex
	events        []api.Event
}

func (ww *wlWatcher) run() {
	for ev := range ww.w.Events() {
		ww.mu.Lock()
		ww.events = append(ww.events, ev)
		ww.mu.Unlock()
	}
}

func (ww *wlWatcher) snapshot() []api.Event {
	ww.mu.Lock()
	defer ww.mu.Unlock()
	return slices.Clone(ww.events)
}

func (w *composeWorkload) failed(what string) {
	w.failMu.Lock()
	w.failures[what]++
	w.failMu.Unlock()
}

// newClient makes a client whose every HTTP request is recorded.
func (w *composeWorkload) newClient(name string, servers []*composeNode, opts ...client.Option) *client.Client {
	id := len(w.clientNames)
	w.clientNames = append(w.clientNames, name)
	base := &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 2 * time.Second, KeepAlive: 15 * time.Second}).DialContext,
		MaxIdleConnsPerHost: 32,
		IdleConnTimeout:     30 * time.Second,
	}
	var urls []string
	for _, n := range servers {
		urls = append(urls, n.URL())
	}
	all := append([]client.Option{
		client.WithHTTPClient(&http.Client{Transport: w.rec.Transport(base, id)}),
		client.WithTTL(composeTTL),
		client.WithRetryTimeout(5 * time.Second),
	}, opts...)
	c := client.NewWithOptions(urls, all...)
	w.clients = append(w.clients, c)
	return c
}

// natsOptions makes a client use every node's NATS port. It ignores the
// servers NATS itself advertises (container addresses) so that the test
// talks only to the published ports, and pings every second so that a
// server that stopped answering (a paused container) is left within a few
// seconds rather than the default two minutes.
func (w *composeWorkload) natsOptions(nodes ...*composeNode) []client.Option {
	if len(nodes) == 0 {
		nodes = w.c.Nodes
	}
	var urls []string
	for _, n := range nodes {
		urls = append(urls, n.NATSURL())
	}
	return []client.Option{
		client.WithNATS(urls...),
		client.WithNATSOptions(nats.IgnoreDiscoveredServers(), nats.PingInterval(time.Second), nats.MaxPingsOutstanding(2)),
		client.WithNATSResync(composeNATSResync),
	}
}

func rotate(nodes []*composeNode, k int) []*composeNode {
	k %= len(nodes)
	return append(slices.Clone(nodes[k:]), nodes[:k]...)
}

// startComposeWorkload creates the services and starts every part of the
// workload, returning once the initial instances are registered and the
// watchers have their first state.
func startComposeWorkload(t *testing.T, c *composeCluster) *composeWorkload {
	t.Helper()
	w := &composeWorkload{
		t: t, c: c,
		services:     []string{"alpha", "beta"},
		stopWrites:   make(chan struct{}),
		failures:     map[string]int{},
		start:        time.Now(),
		checkTimeout: 20 * time.Second,
	}
	w.ctx, w.cancel = context.WithCancel(context.Background())
	w.rec.Proxies = map[string]bool{}
	for _, p := range c.Proxies() {
		w.rec.Proxies[p.Host()] = true
	}
	t.Cleanup(w.stop)
	nodes := c.Nodes // voter1..3, proxy1..2
	w.cProxy = w.newClient("proxies", c.Proxies())
	w.cA = w.newClient("all-a", nodes)
	w.cB = w.newClient("all-b", rotate(nodes, 2))
	w.cNATS = w.newClient("nats", rotate(nodes, 1), w.natsOptions()...)
	w.cMeta1 = w.newClient("meta-1", rotate(nodes, 1), client.WithConsistentReads())
	w.cMeta2 = w.newClient("meta-2", rotate(nodes, 4), client.WithConsistentReads())
	w.cRead = w.newClient("reader", rotate(nodes, 3), client.WithConsistentReads())
	cSSE := w.newClient("watch-sse", rotate(nodes, 2))
	cNATSWatch := w.newClient("watch-nats", rotate(nodes, 3), w.natsOptions()...)

	ctx, cancel := context.WithTimeout(w.ctx, 30*time.Second)
	defer cancel()
	for _, s := range w.services {
		if err := w.cA.AddService(ctx, s, nil); err != nil {
			t.Fatalf("creating service %s: %v", s, err)
		}
	}
	// Every voter's own event stream, for the leader agreement check.
	for _, s := range w.services {
		for _, v := range c.Voters() {
			r := &rawStream{node: v, service: s}
			w.raws = append(w.raws, r)
			w.background.Add(1)
			go func() { defer w.background.Done(); r.run(w.ctx) }()
		}
	}
	// Initial instances: two per HTTP client per service, one over NATS.
	n := 0
	for _, s := range w.services {
		for i, hc := range []*client.Client{w.cProxy, w.cA, w.cB, w.cProxy, w.cA, w.cB} {
			n++
			if err := w.register(ctx, hc, s, fmt.Sprintf("%s-i%d", s, i), n, false); err != nil {
				t.Fatalf("registering the initial instances: %v", err)
			}
		}
		n++
		if err := w.register(ctx, w.cNATS, s, s+"-nats", n, true); err != nil {
			t.Fatalf("registering over NATS: %v", err)
		}
	}
	type watch struct {
		name, service string
		c             *client.Client
	}
	var watches []watch
	for _, s := range w.services {
		watches = append(watches, watch{"sse", s, cSSE}, watch{"nats", s, cNATSWatch})
	}
	// And one NATS watcher on each voter's NATS server alone (its reads go
	// to every node), so that one listens behind the node under fault.
	for i, v := range c.Voters() {
		pc := w.newClient("watch-nats-"+v.Name, rotate(nodes, i), w.natsOptions(v)...)
		watches = append(watches, watch{"nats-" + v.Name, "beta", pc})
	}
	for _, wc := range watches {
		{
			s := wc.service
			cw, err := wc.c.Watch(w.ctx, s)
			if err != nil {
				t.Fatalf("watching %s over %s: %v", s, wc.name, err)
			}
			ww := &wlWatcher{name: wc.name + "/" + s, service: s, w: cw}
			w.watchers = append(w.watchers, ww)
			w.background.Add(1)
			go func() { defer w.background.Done(); ww.run() }()
		}
	}
	for _, s := range w.services {
		for i, mc := range []*client.Client{w.cMeta1, w.cMeta2} {
			w.writers.Add(1)
			go w.metaWriter(mc, s, i+1)
		}
	}
	// One client per voter that talks to that voter only: it keeps one
	// instance heartbeating there and writes meta there, whatever happens to
	// it (a cut-off leader must acknowledge none of it).
	for i, v := range c.Voters() {
		pc := w.newClient("pinned-"+v.Name, []*composeNode{v})
		if err := w.register(ctx, pc, "alpha", "alpha-pin-"+v.Name, 100+i, false); err != nil {
			t.Fatalf("registering through %s: %v", v.Name, err)
		}
		w.writers.Add(1)
		go w.pinnedMetaWriter(pc, v, "beta", 10+i)
	}
	w.writers.Add(2)
	go w.churn()
	go w.reader()
	c.note("workload started: %d instances, %d meta writers, %d watchers, %d node streams",
		len(w.instances), 2*len(w.services), len(w.watchers), len(w.raws))
	return w
}

// register registers an instance and keeps it heartbeating.
func (w *composeWorkload) register(ctx context.Context, c *client.Client, service, id string, n int, overNATS bool) error {
	addr := fmt.Sprintf("10.%d.%d.%d:8080", 1+n/65536, (n/256)%256, n%256)
	hb, err := c.Register(ctx, service, addr, map[string]string{"n": strconv.Itoa(n)}, client.InstanceID(id))
	if err != nil {
		return fmt.Errorf("registering %s/%s: %w", service, id, err)
	}
	w.mu.Lock()
	w.instances = append(w.instances, &wlInstance{service: service, id: id, hb: hb, overNATS: overNATS,
		client: w.clientNameOf(c)})
	w.mu.Unlock()
	return nil
}

func (w *composeWorkload) clientNameOf(c *client.Client) string {
	for i, x := range w.clients {
		if x == c {
			return w.clientNames[i]
		}
	}
	return "?"
}

func (w *composeWorkload) pause(d time.Duration) bool {
	select {
	case <-w.stopWrites:
		return false
	case <-time.After(d):
		return true
	}
}

// metaWriter loops: read the meta (consistently), write new data with a
// compare-and-set on the index read.
func (w *composeWorkload) metaWriter(c *client.Client, service string, writer int) {
	defer w.writers.Done()
	for seq := 1; ; seq++ {
		if !w.pause(time.Duration(100+rand.IntN(200)) * time.Millisecond) {
			return
		}
		ctx, cancel := context.WithTimeout(w.ctx, 3*time.Second)
		var expect uint64
		m, err := c.GetMeta(ctx, service)
		switch {
		case err == nil:
			expect = m.Index
		case client.IsNotFound(err):
		default:
			cancel()
			w.failed("meta read")
			continue
		}
		data, _ := json.Marshal(map[string]any{"writer": writer, "seq": seq})
		_, err = c.SetMeta(ctx, service, &api.ServiceMeta{Data: data, Index: expect})
		cancel()
		if err != nil && !client.IsPreconditionFailed(err) && !client.IsExists(err) {
			w.failed("meta write")
		}
	}
}

// pinnedMetaWriter writes meta through one node only, comparing with the
// index that node itself holds (a plain local read, not recorded): through
// a follower it is forwarded to the leader; through a cut-off node it must
// not be acknowledged.
func (w *composeWorkload) pinnedMetaWriter(c *client.Client, n *composeNode, service string, writer int) {
	defer w.writers.Done()
	for seq := 1; ; seq++ {
		if !w.pause(time.Duration(300+rand.IntN(300)) * time.Millisecond) {
			return
		}
		var m api.ServiceMeta
		if _, err := composeGetJSON(n.URL()+"/services/"+service+"/meta", &m); err != nil && !strings.Contains(err.Error(), "404") {
			continue
		}
		data, _ := json.Marshal(map[string]any{"writer": writer, "seq": seq})
		ctx, cancel := context.WithTimeout(w.ctx, 2*time.Second)
		_, err := c.SetMeta(ctx, service, &api.ServiceMeta{Data: data, Index: m.Index})
		cancel()
		if err != nil && !client.IsPreconditionFailed(err) && !client.IsExists(err) {
			w.failed("pinned meta write")
		}
	}
}

// churn registers a new instance every second or so, retires old ones
// (deregistered, or left to expire), changes the meta of a registered
// instance now and then, and every few seconds retires the leader of beta
// (its oldest instance), so that leadership changes during the fault.
func (w *composeWorkload) churn() {
	defer w.writers.Done()
	clients := []*client.Client{w.cA, w.cProxy, w.cB}
	retired := 0
	for tick := 0; ; tick++ {
		if !w.pause(time.Duration(800+rand.IntN(500)) * time.Millisecond) {
			return
		}
		s := w.services[tick%len(w.services)]
		if tick%3 != 2 {
			w.mu.Lock()
			w.churnN++
			n := 1000 + w.churnN
			w.mu.Unlock()
			ctx, cancel := context.WithTimeout(w.ctx, 4*time.Second)
			if err := w.register(ctx, clients[tick%len(clients)], s, fmt.Sprintf("%s-c%d", s, n), n, false); err != nil {
				w.failed("churn register")
			}
			cancel()
		} else {
			// Retire the oldest churned instance still up, if enough are:
			// deregistered, or (every other time) left to expire.
			w.mu.Lock()
			var victim *wlInstance
			var live []*wlInstance
			for _, in := range w.instances {
				if strings.Contains(in.id, "-c") && !in.closed {
					live = append(live, in)
				}
			}
			if len(live) > 4 {
				victim = live[0]
			}
			w.mu.Unlock()
			if victim != nil {
				retired++
				w.retire(victim, retired%2 == 0)
			}
			// And update the meta of a registered instance (an update).
			w.mu.Lock()
			var initial []*wlInstance
			for _, in := range w.instances {
				if strings.Contains(in.id, "-i") && !in.closed {
					initial = append(initial, in)
				}
			}
			w.mu.Unlock()
			if len(initial) > 0 {
				in := initial[rand.IntN(len(initial))]
				ctx, cancel := context.WithTimeout(w.ctx, 4*time.Second)
				if err := in.hb.SetMeta(ctx, map[string]string{"n": in.id, "tick": strconv.Itoa(tick)}); err != nil {
					w.failed("instance meta update")
				}
				cancel()
			}
		}
		if tick%4 == 3 {
			// Retire beta's leader, its oldest live instance registered
			// over HTTP, and register a replacement.
			w.mu.Lock()
			var leader *wlInstance
			for _, in := range w.instances {
				if in.service == "beta" && !in.closed && !in.overNATS {
					leader = in
					break
				}
			}
			w.churnN++
			n := 1000 + w.churnN
			w.mu.Unlock()
			if leader != nil {
				w.retire(leader, false)
			}
			ctx, cancel := context.WithTimeout(w.ctx, 4*time.Second)
			if err := w.register(ctx, clients[(tick/4)%len(clients)], "beta", fmt.Sprintf("beta-r%d", n), n, false); err != nil {
				w.failed("churn register")
			}
			cancel()
		}
	}
}

// retire ends an instance: deregistered (in the background), or, with
// expire, its heartbeats stopped so that the cluster expires it.
func (w *composeWorkload) retire(in *wlInstance, expire bool) {
	w.mu.Lock()
	in.closed = true
	w.mu.Unlock()
	if expire {
		in.hb.Stop()
		w.mu.Lock()
		in.stopped = time.Now()
		w.mu.Unlock()
		return
	}
	w.writers.Add(1)
	go func() {
		defer w.writers.Done()
		if err := in.hb.Close(); err != nil {
			w.failed("deregister")
		}
	}()
}

// reader reads every service's instances consistently, over and over.
func (w *composeWorkload) reader() {
	defer w.writers.Done()
	for {
		if !w.pause(time.Duration(300+rand.IntN(300)) * time.Millisecond) {
			return
		}
		for _, s := range w.services {
			ctx, cancel := context.WithTimeout(w.ctx, 3*time.Second)
			if _, err := w.cRead.Instances(ctx, s); err != nil {
				w.failed("consistent read")
			}
			cancel()
		}
	}
}

// Healed marks the end of the fault: the writers (meta, churn, reads) stop,
// the heartbeats and watchers go on, and the cluster has composeConverge to
// agree again.
func (w *composeWorkload) Healed() {
	w.heal = time.Now()
	close(w.stopWrites)
	w.c.note("healed; writers stopping, heartbeats and watchers go on")
}

func (w *composeWorkload) stop() { w.stopOnce.Do(w.stopNow) }

func (w *composeWorkload) stopNow() {
	select {
	case <-w.stopWrites:
	default:
		close(w.stopWrites)
	}
	w.mu.Lock()
	insts := slices.Clone(w.instances)
	w.mu.Unlock()
	for _, in := range insts {
		in.hb.Stop()
	}
	for _, ww := range w.watchers {
		ww.w.Close()
	}
	w.cancel()
	w.writers.Wait()
	w.background.Wait()
	for _, c := range w.clients {
		c.Close()
	}
}

// --- the nodes' own event streams ---

// rawStream follows one node's SSE stream of one service, resuming with
// Last-Event-ID on the same node after every break, and keeps it as
// history.Segments (a new one after each resync).
type rawStream struct {
	node    *composeNode
	service string

	mu       sync.Mutex
	segments []history.Segment
	// downs are the down events, each with when this stream received it:
	// the expiry or deregistration behind it took effect before that.
	downs    []seenDown
	lastID   uint64
	sessions int
}

func (r *rawStream) run(ctx context.Context) {
	hc := &http.Client{Transport: &http.Transport{
		DialContext: (&net.Dialer{Timeout: 2 * time.Second}).DialContext,
	}}
	for ctx.Err() == nil {
		r.session(ctx, hc)
		select {
		case <-ctx.Done():
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// seenDown is a down event and when a stream received it.
type seenDown struct {
	ev api.Event
	at time.Time
}

// Downs returns a copy of the down events received so far.
func (r *rawStream) Downs() []seenDown {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.downs)
}

// Segments returns a copy of the segments recorded so far.
func (r *rawStream) Segments() []history.Segment {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]history.Segment, len(r.segments))
	for i, s := range r.segments {
		out[i] = history.Segment{Node: s.Node, Events: slices.Clone(s.Events)}
	}
	return out
}

// current is the view of the open segment (the node's state as streamed).
func (r *rawStream) current() (history.View, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.segments) == 0 {
		return history.View{}, false
	}
	evs := r.segments[len(r.segments)-1].Events
	return history.Fold(evs), slices.ContainsFunc(evs, func(e api.Event) bool { return e.Kind == api.EventCurrent })
}

func (r *rawStream) session(ctx context.Context, hc *http.Client) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, r.node.URL()+"/services/"+r.service, nil)
	req.Header.Set("Accept", "text/event-stream")
	r.mu.Lock()
	resume := r.lastID
	r.mu.Unlock()
	if resume > 0 {
		// The id is the Raft index, shared by every event of one entry:
		// ask from the index before, so that an entry cut in the middle is
		// sent whole again (the events already held are skipped).
		req.Header.Set(api.LastEventIDHeader, strconv.FormatUint(resume-1, 10))
	}
	resp, err := hc.Do(req)
	if err != nil {
		return
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return
	}
	r.mu.Lock()
	r.sessions++
	if resume == 0 {
		r.segments = append(r.segments, history.Segment{Node: r.node.Name})
	}
	r.mu.Unlock()
	first := true
	err = readSSE(resp.Body, func(ev api.Event) {
		r.mu.Lock()
		defer r.mu.Unlock()
		if first && resume > 0 && ev.Kind == api.EventResync {
			r.segments = append(r.segments, history.Segment{Node: r.node.Name})
		}
		first = false
		seg := &r.segments[len(r.segments)-1]
		if ev.Index <= r.lastID && ev.Kind != api.EventResync && ev.Kind != api.EventCurrent && holds(seg.Events, &ev) {
			return // resent: already held
		}
		seg.Events = append(seg.Events, ev)
		if ev.Kind == api.EventDown && ev.Instance != nil {
			r.downs = append(r.downs, seenDown{ev: ev, at: time.Now()})
		}
		if ev.Index > r.lastID {
			r.lastID = ev.Index
		}
	})
	_ = err
}

// holds reports whether events end with ev among the events of its index.
func holds(events []api.Event, ev *api.Event) bool {
	for i := len(events) - 1; i >= 0 && events[i].Index >= ev.Index; i-- {
		if e := &events[i]; e.Index == ev.Index && e.Kind == ev.Kind && sameInstanceID(e.Instance, ev.Instance) {
			return true
		}
	}
	return false
}

func sameInstanceID(a, b *api.Instance) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	return a.ID == b.ID && a.Index == b.Index
}

// readSSE calls fn with every event of a stream until it ends.
func readSSE(body interface{ Read([]byte) (int, error) }, fn func(api.Event)) error {
	sc := bufio.NewScanner(body)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	var data []byte
	kind := ""
	for sc.Scan() {
		line := sc.Bytes()
		switch {
		case len(line) == 0:
			if data != nil && kind == "" {
				var ev api.Event
				if err := json.Unmarshal(data, &ev); err != nil {
					return err
				}
				fn(ev)
			}
			if kind == "error" {
				return fmt.Errorf("stream ended with %s", data)
			}
			data, kind = nil, ""
		case line[0] == ':':
		case bytes.HasPrefix(line, []byte("data: ")):
			data = append(data[:0:0], line[len("data: "):]...)
		case bytes.HasPrefix(line, []byte("event: ")):
			kind = string(line[len("event: "):])
		}
	}
	if err := sc.Err(); err != nil {
		return err
	}
	return errors.New("stream closed")
}

// voterView reads a voter's state of a service at one index: the prelude
// of a new stream (its ups, leader and meta are read under one lock).
func voterView(ctx context.Context, n *composeNode, service string) (history.View, uint64, error) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, n.URL()+"/services/"+service, nil)
	req.Header.Set("Accept", "text/event-stream")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return history.View{}, 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return history.View{}, 0, fmt.Errorf("%s: GET /services/%s: %s", n.Name, service, resp.Status)
	}
	var prelude []api.Event
	var index uint64
	errDone := errors.New("done")
	err = readSSE(resp.Body, func(ev api.Event) {
		if index != 0 {
			return
		}
		prelude = append(prelude, ev)
		if ev.Kind == api.EventCurrent {
			index = ev.Index
			cancel()
		}
	})
	if index == 0 {
		if err == nil {
			err = errDone
		}
		return history.View{}, 0, fmt.Errorf("%s: no current state: %v", n.Name, err)
	}
	return history.Fold(prelude), index, nil
}

// --- convergence and the checks ---

// convergence describes how far the cluster is from agreeing, "" once
// every node is healthy and names the same leader, every voter holds the
// same state at the same index, and every watcher and node stream adds up
// to that state.
func (w *composeWorkload) convergence() (string, map[string]history.View) {
	if ok, why := w.c.serving(); !ok {
		return why, nil
	}
	views := map[string]history.View{}
	for _, s := range w.services {
		var ref history.View
		var refIndex uint64
		for i, v := range w.c.Voters() {
			view, index, err := voterView(w.ctx, v, s)
			if err != nil {
				return err.Error(), nil
			}
			if i == 0 {
				ref, refIndex = view, index
				continue
			}
			if index != refIndex {
				return fmt.Sprintf("%s is at index %d, %s at %d", v.Name, index, w.c.Voters()[0].Name, refIndex), nil
			}
			if d := view.Diff(ref); d != "" {
				return fmt.Sprintf("%s: %s differs from %s: %s", s, v.Name, w.c.Voters()[0].Name, d), nil
			}
		}
		views[s] = ref
	}
	for _, ww := range w.watchers {
		if d := history.Fold(ww.snapshot()).Diff(views[ww.service]); d != "" {
			return fmt.Sprintf("watcher %s: %s", ww.name, d), nil
		}
	}
	for _, r := range w.raws {
		v, ok := r.current()
		if !ok {
			return fmt.Sprintf("stream of %s on %s has no current state", r.service, r.node.Name), nil
		}
		if d := v.Diff(views[r.service]); d != "" {
			return fmt.Sprintf("stream of %s on %s: %s", r.service, r.node.Name, d), nil
		}
	}
	return "", views
}

// Finish waits for the cluster to converge, checks that it takes writes,
// takes the final reads while the heartbeats still run, stops the workload
// and checks every invariant. extra adds the scenario's own checks.
func (w *composeWorkload) Finish(extra func(r *composeReport)) {
	t := w.t
	if w.heal.IsZero() {
		w.Healed()
	}
	w.writers.Wait()
	r := &composeReport{w: w}

	// Convergence within composeConverge of the heal (waiting longer only
	// to describe what was wrong).
	var why string
	lastNote := time.Now()
	for {
		var views map[string]history.View
		why, views = w.convergence()
		if why == "" {
			w.converged = time.Since(w.heal)
			w.settled = time.Now()
			w.final = views
			break
		}
		if time.Since(w.heal) > composeConverge+20*time.Second {
			break
		}
		if time.Since(lastNote) > 2*time.Second {
			short := why
			if len(short) > 240 {
				short = short[:240] + "..."
			}
			w.c.note("not converged yet: %s", short)
			lastNote = time.Now()
		}
		time.Sleep(200 * time.Millisecond)
	}
	switch {
	case why != "":
		r.problem("the cluster did not converge within %v of the heal: %s", composeConverge+20*time.Second, why)
	case w.converged > composeConverge:
		r.problem("the cluster converged %v after the heal, more than %v", w.converged.Round(10*time.Millisecond), composeConverge)
	default:
		w.c.note("converged %v after the heal", w.converged.Round(10*time.Millisecond))
	}

	// The healed cluster takes writes through every kind of client.
	ctx, cancel := context.WithTimeout(w.ctx, 15*time.Second)
	for i, hc := range []*client.Client{w.cProxy, w.cA, w.cB} {
		s := w.services[i%len(w.services)]
		if err := w.register(ctx, hc, s, fmt.Sprintf("%s-post%d", s, i), 5000+i, false); err != nil {
			r.problem("after the heal: %v", err)
		}
	}
	for _, s := range w.services {
		m, err := w.cMeta1.GetMeta(ctx, s)
		if err != nil {
			r.problem("after the heal: reading the meta of %s: %v", s, err)
			continue
		}
		if _, err := w.cMeta1.SetMeta(ctx, s, &api.ServiceMeta{Data: json.RawMessage(`{"after":"heal"}`), Index: m.Index}); err != nil {
			r.problem("after the heal: writing the meta of %s: %v", s, err)
		}
	}
	// The final reads, in the history: every acknowledged write must show.
	finals := map[string][]*api.Instance{}
	finalMetas := map[string]*api.ServiceMeta{}
	for _, s := range w.services {
		insts, err := w.cRead.Instances(ctx, s)
		if err != nil {
			r.problem("final read of %s: %v", s, err)
		}
		finals[s] = insts
		m, err := w.cRead.GetMeta(ctx, s)
		if err != nil {
			r.problem("final meta read of %s: %v", s, err)
		}
		finalMetas[s] = m
	}
	cancel()
	w.finalRead = time.Now()
	w.stop()

	r.check(finals, finalMetas)
	w.checkStoppedExpire(r)
	w.saveArtifacts(r)
	if extra != nil {
		extra(r)
	}
	r.log()
	if len(r.problems) > 0 {
		t.Errorf("%d invariant(s) broken:\n%s", len(r.problems), strings.Join(r.problems, "\n\n"))
	}
}

// composeReport gathers the checks' results.
type composeReport struct {
	w   *composeWorkload
	ops []history.Op
	// cfg is the configuration of the history checks.
	cfg history.Config
	// hist is the history check's report.
	hist     history.Report
	problems []string
	stats    []string
}

func (r *composeReport) problem(format string, args ...any) {
	r.problems = append(r.problems, fmt.Sprintf(format, args...))
}

func (r *composeReport) stat(format string, args ...any) {
	r.stats = append(r.stats, fmt.Sprintf(format, args...))
}

func (r *composeReport) check(finals map[string][]*api.Instance, finalMetas map[string]*api.ServiceMeta) {
	w := r.w
	r.ops = w.rec.Ops()
	natsInst := map[string]bool{}
	for _, in := range w.instances {
		if in.overNATS {
			natsInst[in.service+"/"+in.id] = true
		}
	}
	// Only the answers of a node cut off from the others do not count as
	// heartbeats to the majority.
	r.cfg = history.Config{
		TTL:          composeTTL,
		Unwatched:    func(service, id string) bool { return natsInst[service+"/"+id] },
		Discount:     func(op *history.Op) bool { return w.c.isolatedAt(op.Node, op.Call, op.Return) },
		Timeout:      w.checkTimeout,
		VisualizeDir: w.c.artifacts,
		Settled:      w.settled,
	}
	// 1. The history: linearizable, no acknowledged write lost. A check
	// that cannot decide (refuting a history with many writes of unknown
	// outcome can take exponential time) fails too.
	rep := history.Check(r.ops, r.cfg)
	r.hist = rep
	r.problems = append(r.problems, rep.Problems...)
	r.problems = append(r.problems, rep.Inconclusive...)
	counts := map[history.Outcome]int{}
	for _, op := range r.ops {
		counts[op.Outcome]++
	}
	r.stat("history: %d operations (%d ok, %d failed, %d unknown outcome) in %d partitions, checked in %v",
		len(r.ops), counts[history.OK], counts[history.Failed], counts[history.Unknown], rep.Partitions, rep.Elapsed.Round(time.Millisecond))

	// 2. The watchers' streams: indexes only go up (several events of one
	// entry share its index); their final views were compared with the
	// cluster's state by the convergence check.
	for _, ww := range w.watchers {
		events := ww.snapshot()
		for _, p := range history.CheckStream(events) {
			r.problem("watcher %s: %s", ww.name, p)
		}
		r.stat("watcher %s: %d events", ww.name, len(events))
	}
	// 3. The nodes' own streams: the same, per segment, and at every Raft
	// index every node reports the same leader of each service.
	for _, s := range w.services {
		var segs []history.Segment
		for _, raw := range w.raws {
			if raw.service != s {
				continue
			}
			for _, seg := range raw.Segments() {
				for _, p := range history.CheckStream(seg.Events) {
					r.problem("stream of %s on %s: %s", s, seg.Node, p)
				}
				segs = append(segs, seg)
			}
		}
		for _, p := range history.CheckLeaders(segs) {
			r.problem("service %s: %s", s, p)
		}
		leaders := 0
		for _, seg := range segs {
			for _, ev := range seg.Events {
				if ev.Kind == api.EventLeader {
					leaders++
				}
			}
		}
		r.stat("service %s: %d node stream segments, %d leader events compared", s, len(segs), leaders)
	}

	// 4. An instance that kept heartbeating to the majority was never
	// expired: it is still there with the index it was first registered at,
	// and no node ever streamed its down.
	downs := map[string][]string{}
	for _, raw := range w.raws {
		for _, seg := range raw.Segments() {
			for _, ev := range seg.Events {
				if ev.Kind == api.EventDown && ev.Instance != nil {
					k := ev.Service + "/" + ev.Instance.ID
					downs[k] = append(downs[k], fmt.Sprintf("%s@%d on %s at index %d", ev.Instance.ID, ev.Instance.Index, seg.Node, ev.Index))
				}
			}
		}
	}
	protected, gapped, expired := 0, 0, 0
	for _, in := range w.instances {
		if in.closed || in.overNATS {
			continue
		}
		k := in.service + "/" + in.id
		if len(downs[k]) > 0 {
			expired++
		}
		from := history.ExpiryFrom(r.ops, in.service, in.id, r.cfg)
		if !from.After(w.finalRead) {
			gapped++
			continue
		}
		protected++
		first := firstIndex(r.ops, in.service, in.id)
		var got *api.Instance
		for _, fi := range finals[in.service] {
			if fi.ID == in.id {
				got = fi
			}
		}
		switch {
		case len(downs[k]) > 0:
			r.problem("instance %s kept heartbeating to the majority (no gap of a TTL) but was expired: %s", k, strings.Join(downs[k], ", "))
		case got == nil:
			r.problem("instance %s kept heartbeating to the majority but is missing from the final read", k)
		case got.Index != first:
			r.problem("instance %s kept heartbeating to the majority but was registered anew (index %d, first %d)", k, got.Index, first)
		}
	}
	r.stat("instances: %d kept heartbeating and were never expired, %d had a gap of a TTL in their heartbeats, %d expired at some point, %d over NATS",
		protected, gapped, expired, len(natsInst))
	if protected == 0 {
		r.problem("no instance kept heartbeating through the scenario: the check proved nothing")
	}

	// 5. The final meta is the last acknowledged write (or a later one
	// whose answer was lost).
	for _, s := range w.services {
		var last *history.Op
		for i := range r.ops {
			op := &r.ops[i]
			if op.Kind == history.SetMeta && op.Service == s && op.Outcome == history.OK && (last == nil || op.Index > last.Index) {
				last = op
			}
		}
		fm := finalMetas[s]
		switch {
		case last == nil:
			r.problem("service %s: no meta write was acknowledged", s)
		case fm == nil:
			r.problem("service %s: no final meta read", s)
		case fm.Index < last.Index:
			r.problem("service %s: the final meta %s@%d is older than the acknowledged write %s", s, fm.Data, fm.Index, last)
		}
	}
	w.failMu.Lock()
	var fails []string
	for k, v := range w.failures {
		fails = append(fails, fmt.Sprintf("%s %d", k, v))
	}
	w.failMu.Unlock()
	slices.Sort(fails)
	if len(fails) > 0 {
		r.stat("client calls that failed (expected during a fault): %s", strings.Join(fails, ", "))
	}
}

// checkStoppedExpire: an instance whose heartbeats the workload stopped is
// expired within two TTLs of the stop or of the heal, whichever is later
// (a new leader that cannot trust its heartbeat table gives every instance
// a TTL from its election).
func (w *composeWorkload) checkStoppedExpire(r *composeReport) {
	var stopped []*wlInstance
	for _, in := range w.instances {
		if !in.stopped.IsZero() {
			stopped = append(stopped, in)
		}
	}
	expired := 0
	for _, in := range stopped {
		deadline := in.stopped
		if w.heal.After(deadline) {
			deadline = w.heal
		}
		deadline = deadline.Add(2*composeTTL + time.Second)
		for {
			present, err := w.presentAnywhere(in.service, in.id)
			if err == nil && !present {
				expired++
				break
			}
			if time.Now().After(deadline) {
				r.problem("instance %s/%s stopped heartbeating at %s but was still registered at %s (err %v)",
					in.service, in.id, in.stopped.Format("15:04:05.000"), time.Now().Format("15:04:05.000"), err)
				break
			}
			time.Sleep(250 * time.Millisecond)
		}
	}
	r.stat("instances whose heartbeats were stopped: %d, all expired in time: %v", len(stopped), expired == len(stopped))
}

// presentAnywhere reports whether any voter still lists the instance.
func (w *composeWorkload) presentAnywhere(service, id string) (bool, error) {
	for _, v := range w.c.Voters() {
		var list []*api.Instance
		if _, err := composeGetJSON(v.URL()+"/services/"+service+"/instances", &list); err != nil {
			return false, err
		}
		for _, in := range list {
			if in.ID == id {
				return true, nil
			}
		}
	}
	return false, nil
}

// saveArtifacts writes the history and every recorded stream to the
// artifacts dir when the test fails or DISCOVERD_COMPOSE_ARTIFACTS is set.
func (w *composeWorkload) saveArtifacts(r *composeReport) {
	if len(r.problems) == 0 && os.Getenv("DISCOVERD_COMPOSE_ARTIFACTS") == "" {
		return
	}
	if err := os.MkdirAll(w.c.artifacts, 0o755); err != nil {
		return
	}
	var b strings.Builder
	for i := range r.ops {
		fmt.Fprintf(&b, "%s [%s]\n", &r.ops[i], w.clientNames[r.ops[i].Client])
	}
	os.WriteFile(filepath.Join(w.c.artifacts, "history.txt"), []byte(b.String()), 0o644)
	history.WriteFile(filepath.Join(w.c.artifacts, "history.json"), r.ops, w.settled)
	b.Reset()
	for _, ww := range w.watchers {
		fmt.Fprintf(&b, "watcher %s\n", ww.name)
		for _, ev := range ww.snapshot() {
			fmt.Fprintf(&b, "  %s\n", history.DescribeEvent(&ev))
		}
	}
	for _, raw := range w.raws {
		for i, seg := range raw.Segments() {
			fmt.Fprintf(&b, "stream of %s on %s, segment %d\n", raw.service, raw.node.Name, i)
			for _, ev := range seg.Events {
				fmt.Fprintf(&b, "  %s\n", history.DescribeEvent(&ev))
			}
		}
	}
	os.WriteFile(filepath.Join(w.c.artifacts, "streams.txt"), []byte(b.String()), 0o644)
}

// firstIndex is the index of an instance's first acknowledged registration.
func firstIndex(ops []history.Op, service, id string) uint64 {
	var first *history.Op
	for i := range ops {
		op := &ops[i]
		if op.Kind == history.Register && op.Service == service && op.Instance == id && op.Outcome == history.OK {
			if first == nil || op.Return.Before(first.Return) {
				first = op
			}
		}
	}
	if first == nil {
		return 0
	}
	return first.Index
}

func (r *composeReport) log() {
	w := r.w
	var b strings.Builder
	fmt.Fprintf(&b, "scenario %s: %v of workload, converged %v after the heal\n", w.t.Name(),
		w.finalRead.Sub(w.start).Round(100*time.Millisecond), w.converged.Round(10*time.Millisecond))
	w.c.mu.Lock()
	for _, l := range w.c.timeline {
		fmt.Fprintf(&b, "  %s\n", l)
	}
	w.c.mu.Unlock()
	for _, s := range r.stats {
		fmt.Fprintf(&b, "  %s\n", s)
	}
	w.t.Log(b.String())
}

// opsBy returns the operations answered by node (its published address)
// within [from, to] that match kind and outcome.
func (r *composeReport) opsBy(n *composeNode, from, to time.Time, kinds []history.Kind, outcome history.Outcome) []history.Op {
	var out []history.Op
	for _, op := range r.ops {
		if op.Node == n.Host() && slices.Contains(kinds, op.Kind) && op.Outcome == outcome && !op.Call.Before(from) && !op.Return.After(to) {
			out = append(out, op)
		}
	}
	return out
}

// busiest returns, of nodes, the one that answered the most heartbeats in
// the last d: the one whose loss the instances feel most.
func (w *composeWorkload) busiest(nodes []*composeNode, d time.Duration) *composeNode {
	since := time.Now().Add(-d)
	count := map[string]int{}
	for _, op := range w.rec.Ops() {
		if op.Call.After(since) && op.Kind == history.Register {
			count[op.Node]++
		}
	}
	best := nodes[0]
	for _, n := range nodes[1:] {
		if count[n.Host()] > count[best.Host()] {
			best = n
		}
	}
	return best
}

// run runs the workload for d, failing the test if it is torn down.
func (w *composeWorkload) run(d time.Duration) {
	select {
	case <-time.After(d):
	case <-w.ctx.Done():
		w.t.Fatal("workload stopped early")
	}
}
