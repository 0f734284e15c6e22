package main

import (
	"bytes"
	"context"
	"encoding/json"
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

// heartbeat-nats: fire-and-forget heartbeats published as fast as
// --nats-conns connections take them for --duration. Publishing alone says
// nothing of what the server processed, so the run ends with a burst of
// heartbeat requests; the server's heartbeat workers answer a request only
// after the heartbeats queued before it, so the run ends when the last of
// them is answered, and the rate is published / (that moment - start).
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
	conns, closeAll, err := b.natsConns(b.cfg.natsConns)
	if err != nil {
		return failed(name, err)
	}
	defer closeAll()
	subj := heartbeatSubject(svc)
	var published atomic.Int64
	b.progress.set("publishing", &published, 0, b.cfg.duration)
	var wg sync.WaitGroup
	var pubErr error
	var mu sync.Mutex
	start := time.Now()
	deadline := start.Add(b.cfg.duration)
	for c, nc := range conns {
		wg.Add(1)
		go func(c int, nc *nats.Conn) {
			defer wg.Done()
			k := c
			var local int64
			for ctx.Err() == nil {
				// Check the clock every 256 messages; a publish is ~100 ns.
				for j := 0; j < 256; j++ {
					if err := nc.Publish(subj, payloads[k]); err != nil {
						mu.Lock()
						pubErr = err
						mu.Unlock()
						return
					}
					if k += len(conns); k >= len(payloads) {
						k = c % len(payloads)
					}
				}
				local += 256
				published.Add(256)
				if !time.Now().Before(deadline) {
					break
				}
			}
			if err := nc.Flush(); err != nil {
				mu.Lock()
				pubErr = err
				mu.Unlock()
			}
		}(c, nc)
	}
	wg.Wait()
	pubDone := time.Since(start)
	if pubErr != nil {
		return failed(name, fmt.Errorf("publishing: %v", pubErr))
	}
	// Confirm: requests behind the queued heartbeats, on every connection
	// (each connection's messages are delivered in order).
	b.progress.set("waiting for the server to process them", nil, 0, 0)
	const confirms = 32
	errs := make(chan error, confirms*len(conns))
	for c, nc := range conns {
		for j := 0; j < confirms; j++ {
			wg.Add(1)
			go func(nc *nats.Conn, p []byte) {
				defer wg.Done()
				msg, err := nc.Request(subj, p, 2*time.Minute)
				if err == nil {
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
			return failed(name, fmt.Errorf("confirming request: %v", err))
		}
	}
	n := published.Load()
	row := Result{Workload: name, Ops: n, Rate: f64(round1(float64(n) / elapsed.Seconds()))}
	row.Note = fmt.Sprintf("processed rate; published at %.0f/s for %s, the server caught up %s later (%d conns, %d instances)",
		float64(n)/pubDone.Seconds(), pubDone.Round(time.Millisecond), (elapsed - pubDone).Round(time.Millisecond), len(conns), len(payloads))
	return []Result{row}
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
	nc, err := b.natsConnect(0)
	if err != nil {
		return failed(name, err)
	}
	defer nc.Close()
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
			events <- arrival{kind: ev.Kind, id: ev.Instance.ID, at: at}
		}
	})
	if err != nil {
		return failed(name, err)
	}
	defer sub.Unsubscribe()
	if err := nc.Flush(); err != nil {
		return failed(name, err)
	}
	return b.eventLatency(ctx, name, svc, events, errc)
}

// fanout-nats: --subscribers NATS connections, each subscribed to
// discoverd.events.{svc}.leader.
func runFanoutNATS(ctx context.Context, b *bench) []Result {
	const name = "fanout-nats"
	if !b.hasNATS() {
		return natsSkipped(name)
	}
	svc, cleanup, err := b.prepareFanout(ctx, name)
	if err != nil {
		return failed(name, err)
	}
	defer cleanup()
	k := b.cfg.subscribers
	events := make(chan arrival, k*(b.cfg.rounds+2))
	errc := make(chan error, 1)
	subj := eventSubject(svc, string(api.EventLeader))
	var opened atomic.Int64
	b.progress.set("connecting subscribers", &opened, int64(k), 0)
	conns := make([]*nats.Conn, k)
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
	for i := 0; i < k; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			nc, err := b.natsConnect(i)
			if err == nil {
				conns[i] = nc
				_, err = nc.Subscribe(subj, func(m *nats.Msg) {
					at := time.Now()
					var ev api.Event
					if json.Unmarshal(m.Data, &ev) == nil && ev.Instance != nil {
						events <- arrival{sub: i, kind: ev.Kind, id: ev.Instance.ID, at: at}
					}
				})
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
				return
			}
			opened.Add(1)
		}(i)
	}
	wg.Wait()
	if firstErr != nil {
		return failed(name, fmt.Errorf("subscribing %d connections: %v", k, firstErr))
	}
	if ctx.Err() != nil {
		return failed(name, ctx.Err())
	}
	return b.fanout(ctx, name, svc, k, events, errc)
}
