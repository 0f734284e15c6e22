package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/discoverd/discoverd/api"
)

// heartbeat-http: --instances instances, registered first, then heartbeated
// (PUT of the same Instance JSON) by --concurrency keep-alive connections for
// --duration. Each connection cycles through its own share of instances with
// requests encoded before the clock starts.
func runHeartbeatHTTP(ctx context.Context, b *bench) []Result {
	return heartbeatHTTP(ctx, b, "heartbeat-http")
}

// heartbeat-https: heartbeat-http against the --https servers, over TLS
// with the bearer token, so one run compares the two (the keep-alive
// connections pay the handshake once; each request pays the token check).
func runHeartbeatHTTPS(ctx context.Context, b *bench) []Result {
	if b.secure == nil {
		return []Result{{Workload: "heartbeat-https", Skipped: "no --https server"}}
	}
	return heartbeatHTTP(ctx, b.secure, "heartbeat-https")
}

func heartbeatHTTP(ctx context.Context, b *bench, name string) []Result {
	svc, cleanup, err := b.createService(ctx, name)
	if err != nil {
		return failed(name, err)
	}
	defer cleanup()
	if _, err := b.fill(ctx, svc, "i-", b.cfg.instances); err != nil {
		return failed(name, err)
	}
	return []Result{b.heartbeatHTTP(ctx, name, svc, b.serverPID())}
}

// heartbeatHTTP is heartbeat-http's timed part, against b's servers, with
// the CPU time of process pid per heartbeat when pid is not 0.
func (b *bench) heartbeatHTTP(ctx context.Context, name, svc string, pid int) Result {
	n := b.cfg.instances
	conc := min(b.cfg.concurrency, n)
	reqs := make([][]request, conc)
	for i := 0; i < n; i++ {
		w := i % conc
		id := instanceID("i-", int64(i))
		r := request{method: http.MethodPut, path: instancePath(svc, id), body: instanceBody(id, int64(i))}
		b.prepare(w, &r)
		reqs[w] = append(reqs[w], r)
	}
	cpu := startCPU(pid)
	res := b.load(ctx, "heartbeating", conc, b.cfg.duration, 0, func(w int) (func(int64) error, func()) {
		d := b.newDoer(w)
		mine := reqs[w]
		k := 0
		return func(int64) error {
			r := &mine[k]
			if k++; k == len(mine) {
				k = 0
			}
			st, body, err := d.do(r)
			if err != nil {
				return err
			}
			if st != http.StatusOK {
				return httpError(st, body)
			}
			return nil
		}, d.close
	})
	row := loadRow(name, res)
	if row.Note == "" {
		row.Note = fmt.Sprintf("%d instances, %d connections", n, conc)
		cpu.perOp(&row, res.ops)
	}
	return row
}

// register: new instances through Raft by --concurrency writers for
// --duration, into a new service.
func runRegister(ctx context.Context, b *bench) []Result {
	const name = "register"
	svc, cleanup, err := b.createService(ctx, name)
	if err != nil {
		return failed(name, err)
	}
	defer cleanup()
	res := b.load(ctx, "registering", b.cfg.concurrency, b.cfg.duration, 0, b.registerOp(svc, "r-"))
	row := loadRow(name, res)
	if row.Note == "" {
		row.Note = fmt.Sprintf("concurrency %d, service grew 0 -> %d", b.cfg.concurrency, res.ops)
	}
	return []Result{row}
}

// register-large: as register, into a service that already holds
// --large-instances instances.
func runRegisterLarge(ctx context.Context, b *bench) []Result {
	const name = "register-large"
	svc, cleanup, err := b.createService(ctx, name)
	if err != nil {
		return failed(name, err)
	}
	defer cleanup()
	fill, err := b.fill(ctx, svc, "l-", b.cfg.large)
	if err != nil {
		return failed(name, err)
	}
	if fill.elapsed > b.cfg.ttl/2 {
		// The first instances of the fill expire during the measurement.
		fmt.Fprintf(b.progress.w, "warning: %s: filling took %s, more than half of --ttl %s; the prefill may expire while measuring\n",
			name, fill.elapsed.Round(time.Millisecond), b.cfg.ttl)
	}
	res := b.load(ctx, "registering", b.cfg.concurrency, b.cfg.duration, 0, b.registerOp(svc, "r-"))
	row := loadRow(name, res)
	if row.Note == "" {
		row.Note = fmt.Sprintf("concurrency %d, service held %d (filled at %.0f/s)", b.cfg.concurrency, b.cfg.large, fill.rate())
	}
	return []Result{row}
}

// arrival is an event seen by a subscriber at a time.
type arrival struct {
	sub  int
	kind api.EventKind
	id   string
	at   time.Time
}

// watcher is the server, of n, that the event streams and subscriptions of
// event-latency and detect use: with several servers, not the first, which
// takes the writes, so that the events measured crossed the cluster (were
// replicated to, or routed through, another node) as they do for most of a
// cluster's watchers.
func watcher(n int) int { return 1 % n }

// eventLatency registers --samples instances one at a time through the
// first server and times each from the moment its request is sent until its
// up event arrives on events (watched at via, when not the same).
func (b *bench) eventLatency(ctx context.Context, name, svc, via string, events <-chan arrival, errc <-chan error) []Result {
	d := b.newDoer(0)
	defer d.close()
	var lat, answered samples
	var count atomic.Int64
	b.progress.set("registering and waiting for up events", &count, int64(b.cfg.samples), 0)
	var body []byte
	for i := 0; i < b.cfg.samples; i++ {
		if ctx.Err() != nil {
			return failed(name, ctx.Err())
		}
		id := instanceID("e-", int64(i))
		body = appendInstanceBody(body[:0], id, int64(i))
		r := request{method: http.MethodPut, path: instancePath(svc, id), body: body}
		t0 := time.Now()
		st, resp, err := d.do(&r)
		t1 := time.Now()
		if err == nil && st != http.StatusOK {
			err = httpError(st, resp)
		}
		if err != nil {
			return failed(name, fmt.Errorf("registering %s: %v", id, err))
		}
		timeout := time.NewTimer(10 * time.Second)
	wait:
		for {
			select {
			case a := <-events:
				if a.kind == api.EventUp && a.id == id {
					lat.add(a.at.Sub(t0))
					answered.add(t1.Sub(t0))
					break wait
				}
			case err := <-errc:
				timeout.Stop()
				return failed(name, fmt.Errorf("event stream: %v", err))
			case <-timeout.C:
				return failed(name, fmt.Errorf("no up event for %s within 10s", id))
			case <-ctx.Done():
				timeout.Stop()
				return failed(name, ctx.Err())
			}
		}
		timeout.Stop()
		count.Add(1)
	}
	row := Result{Workload: name, Ops: int64(len(lat))}
	row.setLatency(lat)
	a := answered.summarize()
	row.Note = fmt.Sprintf("from request sent; the registration itself was answered in p50 %.3f ms", *ms(a.p50))
	if via != "" {
		row.Note += fmt.Sprintf("; registered through %s, event seen on %s", b.servers[0].host, via)
	}
	return []Result{row}
}

// event-latency-sse: registration request sent -> its up event on an SSE
// stream of the service (GET /services/{svc}).
func runEventLatencySSE(ctx context.Context, b *bench) []Result {
	const name = "event-latency-sse"
	svc, cleanup, err := b.createService(ctx, name)
	if err != nil {
		return failed(name, err)
	}
	defer cleanup()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	w := watcher(len(b.servers))
	st, err := b.openSSE(ctx, w, "/services/"+svc)
	if err != nil {
		return failed(name, err)
	}
	defer st.close()
	via := ""
	if w != 0 {
		via = b.servers[w].host
	}
	if err := st.untilCurrent(); err != nil {
		return failed(name, err)
	}
	events := make(chan arrival, 1024)
	errc := make(chan error, 1)
	go func() {
		for {
			ev, err := st.next()
			if err != nil {
				errc <- err
				return
			}
			if ev.Instance != nil {
				if !deliver(ctx, events, arrival{kind: ev.Kind, id: ev.Instance.ID, at: time.Now()}) {
					return
				}
			}
		}
	}()
	return b.eventLatency(ctx, name, svc, via, events, errc)
}

// detect: --samples instances are registered, each then sends one last
// heartbeat (spread over up to a second so the last heartbeats fall at
// every phase of the server's expiry check) and stops; each one's time from
// that heartbeat to its down event on an SSE stream, minus --ttl. With
// several servers the last heartbeats go to each in turn, and the stream is
// on the watcher: a heartbeat a follower takes reaches the leader, which
// alone expires instances, over the cluster, and so does the down event.
func runDetect(ctx context.Context, b *bench) []Result {
	const name = "detect"
	svc, cleanup, err := b.createService(ctx, name)
	if err != nil {
		return failed(name, err)
	}
	defer cleanup()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := b.openSSE(ctx, watcher(len(b.servers)), "/services/"+svc+"/instances")
	if err != nil {
		return failed(name, err)
	}
	defer st.close()
	if err := st.untilCurrent(); err != nil {
		return failed(name, err)
	}
	downs := make(chan arrival, b.cfg.samples+16)
	errc := make(chan error, 1)
	go func() {
		for {
			ev, err := st.next()
			if err != nil {
				errc <- err
				return
			}
			if ev.Kind == api.EventDown && ev.Instance != nil {
				if !deliver(ctx, downs, arrival{kind: ev.Kind, id: ev.Instance.ID, at: time.Now()}) {
					return
				}
			}
		}
	}()
	n := b.cfg.samples
	fill, err := b.fill(ctx, svc, "d-", n)
	if err != nil {
		return failed(name, err)
	}
	spread := min(time.Second, (b.cfg.ttl-fill.elapsed)/2)
	if spread < 0 {
		return failed(name, fmt.Errorf("registering %d instances took %s, longer than --ttl %s; use fewer --samples", n, fill.elapsed, b.cfg.ttl))
	}
	// The last heartbeat of each instance, paced across the spread.
	var sent atomic.Int64
	b.progress.set("last heartbeats", &sent, int64(n), spread)
	last := make(map[string]time.Time, n)
	doers := make([]doer, len(b.servers))
	for i := range doers {
		doers[i] = b.newDoer(i)
		defer doers[i].close()
	}
	start := time.Now()
	var body []byte
	for i := 0; i < n; i++ {
		if wait := time.Until(start.Add(spread * time.Duration(i) / time.Duration(n))); wait > 0 {
			time.Sleep(wait)
		}
		id := instanceID("d-", int64(i))
		body = appendInstanceBody(body[:0], id, int64(i))
		r := request{method: http.MethodPut, path: instancePath(svc, id), body: body}
		t := time.Now()
		code, resp, err := doers[i%len(doers)].do(&r)
		if err == nil && code != http.StatusOK {
			err = httpError(code, resp)
		}
		if err != nil {
			return failed(name, fmt.Errorf("heartbeat of %s: %v", id, err))
		}
		last[id] = t
		sent.Add(1)
	}
	var got atomic.Int64
	b.progress.set("waiting for down events", &got, int64(n), b.cfg.ttl)
	timeout := time.NewTimer(b.cfg.ttl + spread + 30*time.Second)
	defer timeout.Stop()
	var lat samples
	for len(lat) < n {
		select {
		case a := <-downs:
			if t, ok := last[a.id]; ok {
				lat.add(a.at.Sub(t) - b.cfg.ttl)
				delete(last, a.id)
				got.Add(1)
			}
		case err := <-errc:
			return failed(name, fmt.Errorf("event stream: %v", err))
		case <-timeout.C:
			return failed(name, fmt.Errorf("%d of %d instances never went down (is --ttl %s the server's --instance-ttl?)", len(last), n, b.cfg.ttl))
		case <-ctx.Done():
			return failed(name, ctx.Err())
		}
	}
	row := Result{Workload: name, Ops: int64(len(lat))}
	row.setLatency(lat)
	row.Note = fmt.Sprintf("time from last heartbeat to down event minus --ttl %s", b.cfg.ttl)
	if len(b.servers) > 1 {
		row.Note += fmt.Sprintf("; heartbeats spread over %d servers, events seen on %s", len(b.servers), b.servers[watcher(len(b.servers))].host)
	}
	if *row.P50 < -50 {
		row.Note += "; negative: the server's TTL is shorter than --ttl"
	}
	return []Result{row}
}

// fanout measures how long each of k subscribers takes to see a leader
// change. subscribe opens subscriber i, which must send an arrival for every
// leader event to events; it returns when the subscriber is ready. The
// leader changes by deregistering the leader so that the next oldest leads,
// --fanout-rounds times.
//
// With serverSide, it also reads the first server's
// discoverd_event_fanout_seconds after each round: the server's own time
// from publishing the change to its last write into a stream's socket,
// which shows whether the server or this harness is the bottleneck.
func (b *bench) fanout(ctx context.Context, name, svc string, k int, events <-chan arrival, errc <-chan error, serverSide bool) []Result {
	rounds := b.cfg.rounds
	var lat, worst, server samples
	var done atomic.Int64
	b.progress.set("leader changes", &done, int64(rounds), 0)
	for r := 1; r <= rounds; r++ {
		old, next := instanceID("f-", int64(r-1)), instanceID("f-", int64(r))
		t0 := time.Now()
		if _, err := b.call(ctx, http.MethodDelete, instancePath(svc, old), nil); err != nil {
			return failed(name, err)
		}
		seen := make(map[int]bool, k)
		var slowest time.Duration
		timeout := time.NewTimer(30 * time.Second)
		for len(seen) < k {
			select {
			case a := <-events:
				if a.id == next && !seen[a.sub] {
					seen[a.sub] = true
					d := a.at.Sub(t0)
					lat.add(d)
					slowest = max(slowest, d)
				}
			case err := <-errc:
				timeout.Stop()
				return failed(name, err)
			case <-timeout.C:
				return failed(name, fmt.Errorf("round %d: only %d of %d subscribers saw %s become leader within 30s", r, len(seen), k, next))
			case <-ctx.Done():
				timeout.Stop()
				return failed(name, ctx.Err())
			}
		}
		timeout.Stop()
		worst.add(slowest)
		if serverSide {
			if v, ok := b.serverMetric(ctx, "discoverd_event_fanout_seconds"); ok {
				server.add(time.Duration(v * float64(time.Second)))
			}
		}
		done.Add(1)
	}
	row := Result{Workload: name, Ops: int64(rounds)}
	row.setLatency(lat)
	w := worst.summarize()
	row.Note = fmt.Sprintf("%d subscribers x %d leader changes; all saw it within p50 %.3f ms", k, rounds, *ms(w.p50))
	if len(server) > 0 {
		s := server.summarize()
		row.Note += fmt.Sprintf("; server publish -> last socket write p50 %.3f ms, max %.3f ms", *ms(s.p50), *ms(s.max))
	}
	return []Result{row}
}

// serverMetric reads one unlabelled metric from the first server's
// /metrics.
func (b *bench) serverMetric(ctx context.Context, name string) (float64, bool) {
	body, err := b.call(ctx, http.MethodGet, "/metrics", nil)
	if err != nil {
		return 0, false
	}
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			return f, err == nil
		}
	}
	return 0, false
}

// prepareFanout creates the service with --fanout-rounds + 1 instances, the
// first one leading.
func (b *bench) prepareFanout(ctx context.Context, name string) (string, func(), error) {
	svc, cleanup, err := b.createService(ctx, name)
	if err != nil {
		return "", nil, err
	}
	if err := b.registerFanout(svc); err != nil {
		cleanup()
		return "", nil, err
	}
	return svc, cleanup, nil
}

// registerFanout registers the --fanout-rounds + 1 instances of svc.
func (b *bench) registerFanout(svc string) error {
	d := b.newDoer(0)
	defer d.close()
	for i := 0; i <= b.cfg.rounds; i++ {
		id := instanceID("f-", int64(i))
		r := request{method: http.MethodPut, path: instancePath(svc, id), body: instanceBody(id, int64(i))}
		st, body, err := d.do(&r)
		if err == nil && st != http.StatusOK {
			err = httpError(st, body)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// memory: the server's resident memory growth per instance with
// --memory-instances registered (VmRSS of /proc/<pid>/status before and
// after, --settle after the last registration).
func runMemory(ctx context.Context, b *bench) []Result {
	const name = "memory"
	pid := b.cfg.pid
	if pid == 0 {
		var err error
		pid, err = findListener(b.servers[0].host)
		if err != nil {
			return []Result{{Workload: name, Skipped: "no --pid given and the server's process was not found: " + err.Error()}}
		}
	}
	before, err := readMem(pid)
	if err != nil {
		return []Result{{Workload: name, Skipped: fmt.Sprintf("cannot read the memory of pid %d: %v", pid, err)}}
	}
	svc, cleanup, err := b.createService(ctx, name)
	if err != nil {
		return failed(name, err)
	}
	defer cleanup()
	n := b.cfg.memInstances
	fill, err := b.fill(ctx, svc, "m-", n)
	if err != nil {
		return failed(name, err)
	}
	b.progress.set("settling", nil, 0, b.cfg.settle)
	select {
	case <-time.After(b.cfg.settle):
	case <-ctx.Done():
		return failed(name, ctx.Err())
	}
	after, err := readMem(pid)
	if err != nil {
		return failed(name, err)
	}
	row := Result{Workload: name, Ops: int64(n), Rate: f64(round1(fill.rate())),
		BytesPerInstance: f64(round1(float64(after.rss-before.rss) / float64(n)))}
	row.Note = fmt.Sprintf("pid %d VmRSS %.1f -> %.1f MiB (anon %+.0f B/instance); rate is the registration rate",
		pid, mib(before.rss), mib(after.rss), float64(after.anon-before.anon)/float64(n))
	// Were they all still registered when measured?
	if body, err := b.call(ctx, http.MethodGet, "/services/"+svc+"/instances", nil); err == nil {
		var list []json.RawMessage
		if json.Unmarshal(body, &list) == nil && len(list) < n {
			row.Note += fmt.Sprintf("; WARNING only %d of %d instances were still registered (TTL shorter than the fill)", len(list), n)
		}
	}
	return []Result{row}
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }

var errNoNATS = errors.New("no --nats URL given")

// deliver sends a to ch unless ctx ends first (the workload has returned).
func deliver(ctx context.Context, ch chan<- arrival, a arrival) bool {
	select {
	case ch <- a:
		return true
	case <-ctx.Done():
		return false
	}
}
