package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/discoverd/discoverd/api"
	"github.com/nats-io/nats.go"
)

// Subjects of the NATS transport (see DESIGN.md).
func heartbeatSubject(svc string) string     { return "discoverd.heartbeat." + svc }
func eventSubject(svc, kind string) string   { return "discoverd.events." + svc + "." + kind }
func natsSkipped(name string) []Result       { return []Result{{Workload: name, Skipped: errNoNATS.Error()}} }
func (b *bench) hasNATS() bool               { return len(b.cfg.nats) > 0 }
func natsURLFor(urls []string, i int) string { return rotate(urls, i) }

// rotate lists urls starting at the i-th, so connection i prefers server i
// and falls back to the others.
func rotate(urls []string, i int) string {
	i %= len(urls)
	return strings.Join(append(append([]string(nil), urls[i:]...), urls[:i]...), ",")
}

// natsConnect opens NATS connection i.
func (b *bench) natsConnect(i int) (*nats.Conn, error) {
	nc, err := nats.Connect(natsURLFor(b.cfg.nats, i),
		nats.Name(fmt.Sprintf("discoverd-bench-%d", i)),
		nats.DontRandomize(),
		nats.Timeout(5*time.Second),
		nats.MaxReconnects(-1),
	)
	if err != nil {
		return nil, fmt.Errorf("connecting to NATS %s: %w", b.cfg.nats[i%len(b.cfg.nats)], err)
	}
	return nc, nil
}

func (b *bench) natsConns(n int) ([]*nats.Conn, func(), error) {
	conns := make([]*nats.Conn, 0, n)
	closeAll := func() {
		for _, nc := range conns {
			nc.Close()
		}
	}
	for i := 0; i < n; i++ {
		nc, err := b.natsConnect(i)
		if err != nil {
			closeAll()
			return nil, nil, err
		}
		conns = append(conns, nc)
	}
	return conns, closeAll, nil
}

// heartbeatReply checks the answer to a heartbeat request.
func heartbeatReply(data []byte) error {
	if bytes.Contains(data, []byte(`"ok":true`)) {
		return nil
	}
	var e api.Error
	if json.Unmarshal(data, &e) == nil && e.Code != "" {
		return &e
	}
	return fmt.Errorf("unexpected heartbeat reply %q", data)
}

// natsHeartbeatSetup creates a service with --instances registered (over
// HTTP) and their heartbeat payloads.
func (b *bench) natsHeartbeatSetup(ctx context.Context, name string) (string, [][]byte, func(), error) {
	svc, cleanup, err := b.createService(ctx, name)
	if err != nil {
		return "", nil, nil, err
	}
	n := b.cfg.instances
	if _, err := b.fill(ctx, svc, "i-", n); err != nil {
		cleanup()
		return "", nil, nil, err
	}
	payloads := make([][]byte, n)
	for i := range payloads {
		payloads[i] = instanceBody(instanceID("i-", int64(i)), int64(i))
	}
	return svc, payloads, cleanup, nil
}

// Flow control of heartbeat-nats. A connection publishes pubBatch
// heartbeats, then one heartbeat request as a marker, and never has more
// than pubMarkers markers unanswered. The cap matters: the server's NATS
// drops messages silently once 48 MiB are queued for the daemon's own
// connection (the bus runs with NoFastProducerStall), so publishing
// without one measures how fast the server discards heartbeats, not how
// fast it processes them. With the cap, at most pubBatch*pubMarkers
// messages (about 2 MB) per connection are ever in flight.
//
// Bytes alone are not enough: the server also cuts off a connection it could
// not write to for 2 s (its client write deadline), its own included, and
// drops what was queued for it, markers too. A server short of CPU (a busy
// host) drains 16,000 heartbeats slower than that. So the window also
// follows time: a marker answered later than pubLag after it was sent
// shrinks it to one marker and halves the batch (down to pubMinBatch); one
// answered within pubLag/4 grows them back. The window starts at one marker
// and doubles from there.
const (
	pubBatch    = 1000
	pubMarkers  = 16
	pubMinBatch = 50
	pubLag      = time.Second
)

// heartbeat-nats: fire-and-forget heartbeats published as fast as the
// server takes them over --nats-conns connections for --duration; the rate
// is heartbeats published / time until the server answered the requests
// sent behind the last of them (the server answers a request only after
// the heartbeats queued before it on the same worker, and a burst of them
// reaches every worker). A marker answered with "no responders" means the
// server dropped messages; it is reported as errors.
func runHeartbeatNATS(ctx context.Context, b *bench) []Result {
	const name = "heartbeat-nats"
	if !b.hasNATS() {
		return natsSkipped(name)
	}
	svc, payloads, cleanup, err := b.natsHeartbeatSetup(ctx, name)
	if err != nil {
		return failed(name, err)
	}
	defer cleanup()
	return []Result{b.heartbeatNATS(ctx, name, svc, payloads, b.serverPID())}
}

// heartbeatNATS is heartbeat-nats's timed part, against b's NATS servers,
// with the CPU time of process pid per heartbeat when pid is not 0.
func (b *bench) heartbeatNATS(ctx context.Context, name, svc string, payloads [][]byte, pid int) Result {
	conns, closeAll, err := b.natsConns(b.cfg.natsConns)
	if err != nil {
		return failed(name, err)[0]
	}
	defer closeAll()
	subj := heartbeatSubject(svc)
	var published, dropped, lagging atomic.Int64
	b.progress.set("publishing", &published, 0, b.cfg.duration)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	fail := func(err error) {
		mu.Lock()
		if firstErr == nil {
			firstErr = err
		}
		mu.Unlock()
	}
	cpu := startCPU(pid)
	start := time.Now()
	deadline := start.Add(b.cfg.duration)
	for c, nc := range conns {
		wg.Add(1)
		go func(c int, nc *nats.Conn) {
			defer wg.Done()
			inbox := nats.NewInbox()
			replies := make(chan *nats.Msg, pubMarkers+1)
			sub, err := nc.ChanSubscribe(inbox, replies)
			if err != nil {
				fail(err)
				return
			}
			defer sub.Unsubscribe()
			k := c
			outstanding := 0
			// Slow start: the first markers tell how fast this server
			// drains, before a full window is queued for it.
			batch, window := pubBatch, 1
			var sentAt []time.Time // of the outstanding markers, oldest first
			await := func() bool {
				select {
				case m := <-replies:
					outstanding--
					// Answers may overtake each other; the oldest send time
					// is the lag of the slowest.
					lag := time.Since(sentAt[0])
					sentAt = sentAt[1:]
					switch {
					case lag > pubLag:
						batch, window = max(batch/2, pubMinBatch), 1
						lagging.Add(1)
					case lag < pubLag/4:
						batch, window = min(batch*2, pubBatch), min(window*2, pubMarkers)
					}
					if m.Header.Get("Status") == "503" {
						dropped.Add(1)
					} else if err := heartbeatReply(m.Data); err != nil {
						fail(fmt.Errorf("marker: %v", err))
						return false
					}
					return true
				case <-time.After(30 * time.Second):
					fail(errors.New("a marker request was not answered within 30s"))
					return false
				}
			}
			for ctx.Err() == nil && time.Now().Before(deadline) {
				for j := 0; j < batch; j++ {
					if err := nc.Publish(subj, payloads[k]); err != nil {
						fail(err)
						return
					}
					if k += len(conns); k >= len(payloads) {
						k = c % len(payloads)
					}
				}
				published.Add(int64(batch))
				if err := nc.PublishRequest(subj, inbox, payloads[k]); err != nil {
					fail(err)
					return
				}
				sentAt = append(sentAt, time.Now())
				outstanding++
				for outstanding >= window {
					if !await() {
						return
					}
				}
			}
			for outstanding > 0 {
				if !await() {
					return
				}
			}
		}(c, nc)
	}
	wg.Wait()
	pubDone := time.Since(start)
	if firstErr != nil {
		return failed(name, fmt.Errorf("publishing: %v", firstErr))[0]
	}
	// Confirm: a burst of requests behind the last heartbeats, on every
	// connection, so that every worker of the server's queue group gets one.
	b.progress.set("waiting for the server to process them", nil, 0, 0)
	const confirms = 32
	errs := make(chan error, confirms*len(conns))
	for c, nc := range conns {
		for j := 0; j < confirms; j++ {
			wg.Add(1)
			go func(nc *nats.Conn, p []byte) {
				defer wg.Done()
				msg, err := nc.Request(subj, p, time.Minute)
				if errors.Is(err, nats.ErrNoResponders) {
					dropped.Add(1)
					err = nil
				} else if err == nil {
					err = heartbeatReply(msg.Data)
				}
				errs <- err
			}(nc, payloads[(c*confirms+j)%len(payloads)])
		}
	}
	wg.Wait()
	elapsed := time.Since(start)
	close(errs)
	for err := range errs {
		if err != nil {
			return failed(name, fmt.Errorf("confirming request: %v", err))[0]
		}
	}
	// Markers and confirming requests count as heartbeats too.
	n := published.Load()
	row := Result{Workload: name, Ops: n, Rate: f64(round1(float64(n) / elapsed.Seconds())), Errors: dropped.Load()}
	if d := dropped.Load(); d > 0 {
		row.Note = fmt.Sprintf("WARNING the server dropped messages: %d requests got 'no responders'; ", d)
	}
	row.Note += fmt.Sprintf("processed rate; published for %s, the server caught up %s later (%d conns, %d instances, <= %d in flight per conn)",
		pubDone.Round(time.Millisecond), (elapsed - pubDone).Round(time.Millisecond), len(conns), len(payloads), pubBatch*pubMarkers)
	if l := lagging.Load(); l > 0 {
		row.Note += fmt.Sprintf("; %d markers answered over %s late, the window shrank", l, pubLag)
	}
	cpu.perOp(&row, n)
	return row
}

// heartbeat-nats-req: heartbeats as NATS requests, --concurrency requesters
// over --nats-conns connections, for --duration; each waits for its answer.
func runHeartbeatNATSReq(ctx context.Context, b *bench) []Result {
	const name = "heartbeat-nats-req"
	if !b.hasNATS() {
		return natsSkipped(name)
	}
	svc, payloads, cleanup, err := b.natsHeartbeatSetup(ctx, name)
	if err != nil {
		return failed(name, err)
	}
	defer cleanup()
	conns, closeAll, err := b.natsConns(b.cfg.natsConns)
	if err != nil {
		return failed(name, err)
	}
	defer closeAll()
	subj := heartbeatSubject(svc)
	conc := min(b.cfg.concurrency, len(payloads))
	res := b.load(ctx, "requesting", conc, b.cfg.duration, 0, func(w int) (func(int64) error, func()) {
		nc := conns[w%len(conns)]
		k := w
		return func(int64) error {
			p := payloads[k]
			if k += conc; k >= len(payloads) {
				k = w
			}
			msg, err := nc.Request(subj, p, 10*time.Second)
			if err != nil {
				return err
			}
			return heartbeatReply(msg.Data)
		}, nil
	})
	row := loadRow(name, res)
	if row.Note == "" {
		row.Note = fmt.Sprintf("%d requesters over %d conns", conc, len(conns))
	}
	return []Result{row}
}

// event-latency-nats: registration request sent (over HTTP) -> its up event
// on discoverd.events.{svc}.up.
func runEventLatencyNATS(ctx context.Context, b *bench) []Result {
	const name = "event-latency-nats"
	if !b.hasNATS() {
		return natsSkipped(name)
	}
	svc, cleanup, err := b.createService(ctx, name)
	if err != nil {
		return failed(name, err)
	}
	defer cleanup()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	w := watcher(len(b.cfg.nats))
	nc, err := b.natsConnect(w)
	if err != nil {
		return failed(name, err)
	}
	defer nc.Close()
	via := ""
	if w != 0 {
		via = b.cfg.nats[w]
	}
	events := make(chan arrival, 1024)
	errc := make(chan error, 1)
	sub, err := nc.Subscribe(eventSubject(svc, string(api.EventUp)), func(m *nats.Msg) {
		at := time.Now()
		var ev api.Event
		if err := json.Unmarshal(m.Data, &ev); err != nil {
			select {
			case errc <- fmt.Errorf("malformed event %q: %v", m.Data, err):
			default:
			}
			return
		}
		if ev.Instance != nil {
			if !deliver(ctx, events, arrival{kind: ev.Kind, id: ev.Instance.ID, at: at}) {
				return
			}
		}
	})
	if err != nil {
		return failed(name, err)
	}
	defer sub.Unsubscribe()
	if err := nc.Flush(); err != nil {
		return failed(name, err)
	}
	return b.eventLatency(ctx, name, svc, via, events, errc)
}

// fanout-nats: --subscribers NATS connections, each subscribed to
// discoverd.events.{svc}.leader.
// subscribeShared makes subscribers first..last-1 of a fanout on nc: one
// NATS subscription each, all delivering into one channel that one
// goroutine reads. An async subscription of nats.go has a goroutine of its
// own, and 100,000 of them woken at once made the harness, not the
// server, the slower side (see BENCHMARKS.md); the server still sends
// every subscription its own copy of each message. The goroutine decodes
// a payload once, and a copy that is byte for byte the same is not decoded
// again.
func subscribeShared(ctx context.Context, nc *nats.Conn, subj string, first, last, rounds int, events chan<- arrival, opened *atomic.Int64) error {
	// Room for every message of the run: a channel subscription that finds
	// its channel full drops the message as a slow consumer.
	msgs := make(chan *nats.Msg, (last-first)*(rounds+2))
	subs := make(map[*nats.Subscription]int, last-first)
	for i := first; i < last; i++ {
		sub, err := nc.ChanSubscribe(subj, msgs)
		if err != nil {
			return err
		}
		subs[sub] = i
		opened.Add(1)
	}
	go func() {
		var data []byte
		var ev api.Event
		var ok bool
		for {
			select {
			case m := <-msgs:
				at := time.Now()
				if !bytes.Equal(m.Data, data) {
					data = append(data[:0], m.Data...)
					ev = api.Event{}
					ok = json.Unmarshal(m.Data, &ev) == nil && ev.Instance != nil
				}
				i, mine := subs[m.Sub]
				if ok && mine && !deliver(ctx, events, arrival{sub: i, kind: ev.Kind, id: ev.Instance.ID, at: at}) {
					return
				}
			case <-ctx.Done():
				return
			}
		}
	}()
	return nil
}

func runFanoutNATS(ctx context.Context, b *bench) []Result {
	const name = "fanout-nats"
	if !b.hasNATS() {
		return natsSkipped(name)
	}
	// The instances are registered only once every subscriber is in:
	// nats-server updates a subject's cached match list with each new
	// subscription, so subscribing 100,000 times to a subject that has
	// carried messages takes quadratic time.
	svc, cleanup, err := b.createService(ctx, name)
	if err != nil {
		return failed(name, err)
	}
	defer cleanup()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	k := b.cfg.subscribers
	events := make(chan arrival, k*(b.cfg.rounds+2))
	errc := make(chan error, 1)
	subj := eventSubject(svc, string(api.EventLeader))
	var opened atomic.Int64
	b.progress.set("connecting subscribers", &opened, int64(k), 0)
	// Subscribers share connections, --subs-per-conn each: a server takes
	// only so many connections (--nats-max-conns), and many watches of one
	// process share its connection.
	per := b.cfg.subsPerConn
	conns := make([]*nats.Conn, (k+per-1)/per)
	defer func() {
		for _, nc := range conns {
			if nc != nil {
				nc.Close()
			}
		}
	}()
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	sem := make(chan struct{}, 64)
	for c := range conns {
		wg.Add(1)
		go func(c int) {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			nc, err := b.natsConnect(c)
			if err == nil {
				conns[c] = nc
				err = subscribeShared(ctx, nc, subj, c*per, min(k, (c+1)*per), b.cfg.rounds, events, &opened)
			}
			if err == nil {
				err = nc.Flush()
			}
			if err != nil {
				mu.Lock()
				if firstErr == nil {
					firstErr = err
				}
				mu.Unlock()
			}
		}(c)
	}
	wg.Wait()
	if firstErr != nil {
		return failed(name, fmt.Errorf("subscribing %d subscribers over %d connections: %v", k, len(conns), firstErr))
	}
	if ctx.Err() != nil {
		return failed(name, ctx.Err())
	}
	if err := b.registerFanout(svc); err != nil {
		return failed(name, err)
	}
	// Registering made the first instance leader: that event is not a
	// measured change.
	for len(events) > 0 {
		<-events
	}
	rows := b.fanout(ctx, name, svc, k, events, errc, false)
	for i := range rows {
		if rows[i].Error == "" {
			rows[i].Note += fmt.Sprintf("; over %d NATS connections", len(conns))
		}
	}
	return rows
}
