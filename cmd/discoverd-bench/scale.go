package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/discoverd/discoverd/api"
	"github.com/nats-io/nats.go"
)

// scale: --scale-instances instances in one service, registered over HTTP
// by --concurrency writers (the ordinary register path, spread over the
// --http servers), each kept alive over NATS from the moment it is
// registered until --duration after the last registration, one heartbeat
// every --scale-period (default --ttl/3). Half way through the keep-alive
// a follower is restarted (with --restart-cmd, or relaunched from its
// command line when --pids are given) and its catch-up is timed.
//
// False expiry, precisely: a down event of one of the instances, received
// at time D on an SSE stream of the service, is false when the harness sent
// that instance a heartbeat (or its registration request) at a time S with
// D - S < --ttl. The send time S is taken after the message was handed to
// the connection, so it is no earlier than when the server could have
// received it, and D is no earlier than the server's decision: a server that
// expires correctly (its last heartbeat of the instance older than the TTL)
// can never be counted, whatever the delays of the network or the harness.
// A down event with D - S >= --ttl is the harness's fault (it fell behind
// its schedule) and is counted apart as late, with the largest gap between
// two sends of one instance.
//
// The row: ops = instances, errors = false expiries + failed operations
// (registrations that failed, heartbeat requests answered with an error or
// with "no responders"), rate = heartbeats sent per second while keeping
// alive, bytes_per_instance = the largest RSS growth per instance among
// the voters; the note has each voter's and the follower's catch-up time.
func runScale(ctx context.Context, b *bench) []Result {
	const name = "scale"
	if !b.hasNATS() {
		return natsSkipped(name)
	}
	s, err := newScaleRun(ctx, b)
	if err != nil {
		return failed(name, err)
	}
	return []Result{s.run(ctx)}
}

// expiryLedger is what the harness knows of each instance: when it last
// sent it a heartbeat. It classifies down events by it.
type expiryLedger struct {
	ttl time.Duration
	// last is the unix nanoseconds of the last send to instance i, 0 until
	// its registration was answered; prev the one before. A down event is
	// judged by the last send before it arrived: a heartbeat sent between
	// the server's decision and the event's arrival must not make a
	// rightful expiry look false.
	last, prev []atomic.Int64
	maxGap     atomic.Int64
	// false, late and stray count down events by verdict.
	falseExp, late, stray atomic.Int64
	// firstFalse describes the first false expiry.
	mu         sync.Mutex
	firstFalse string
}

func newExpiryLedger(n int, ttl time.Duration) *expiryLedger {
	return &expiryLedger{ttl: ttl, last: make([]atomic.Int64, n), prev: make([]atomic.Int64, n)}
}

// registeredAt records the registration of instance i, sent at t. It is
// not a gap: the request may have taken long to be answered, and the
// heartbeats only start once it was.
func (l *expiryLedger) registeredAt(i int, t time.Time) {
	l.prev[i].Store(l.last[i].Swap(t.UnixNano()))
}

// sent records a heartbeat of instance i at t, and the gap since the one
// before.
func (l *expiryLedger) sent(i int, t time.Time) {
	now := t.UnixNano()
	prev := l.last[i].Swap(now)
	l.prev[i].Store(prev)
	if prev == 0 {
		return
	}
	gap := now - prev
	for {
		m := l.maxGap.Load()
		if gap <= m || l.maxGap.CompareAndSwap(m, gap) {
			return
		}
	}
}

// registered says whether instance i's registration has been answered.
func (l *expiryLedger) registered(i int) bool { return l.last[i].Load() != 0 }

type downVerdict int

const (
	// downStray: not one of the instances, or one not registered yet.
	downStray downVerdict = iota
	// downFalse: the server expired an instance heartbeated within the TTL.
	downFalse
	// downLate: the harness had not heartbeated it for a TTL or more.
	downLate
)

func (v downVerdict) String() string {
	return [...]string{"stray", "false", "late"}[v]
}

// classify judges a down event of instance i (-1: not one of ours)
// received at d, and counts it.
func (l *expiryLedger) classify(i int, d time.Time) downVerdict {
	if i < 0 || i >= len(l.last) || l.last[i].Load() == 0 {
		l.stray.Add(1)
		return downStray
	}
	at := l.last[i].Load()
	if at > d.UnixNano() {
		if p := l.prev[i].Load(); p != 0 {
			at = p
		}
	}
	since := d.Sub(time.Unix(0, at))
	if since < l.ttl {
		if l.falseExp.Add(1) == 1 {
			l.mu.Lock()
			l.firstFalse = fmt.Sprintf("instance %d down %s after its last heartbeat (TTL %s)", i, since.Round(time.Millisecond), l.ttl)
			l.mu.Unlock()
		}
		return downFalse
	}
	l.late.Add(1)
	return downLate
}

// scaleIndex is the instance number of id, -1 for an id not of the form
// <prefix><number> within n instances.
func scaleIndex(id, prefix string, n int) int {
	rest, ok := strings.CutPrefix(id, prefix)
	if !ok {
		return -1
	}
	i, err := strconv.Atoi(rest)
	if err != nil || i < 0 || i >= n || strconv.Itoa(i) != rest {
		return -1
	}
	return i
}

const scalePrefix = "s-"

// scaleRun is one run of the scale workload.
type scaleRun struct {
	b      *bench
	n      int
	period time.Duration
	ledger *expiryLedger
	svc    string
	// pids of the --http servers, in order; 0 where unknown.
	pids              []int
	rssFrom, anonFrom []int64
	leader            int // index in b.servers
	target            int // the follower restarted, -1 for none
	watch             int // the server whose SSE stream is watched
	// failedOps: heartbeat requests answered with an error; dropped: with
	// "no responders"; lost: not answered within markerTimeout.
	failedOps, dropped, lost atomic.Int64
	hbSent                   atomic.Int64
	regRetries               atomic.Int64
	firstErr                 atomic.Pointer[string]
}

func (s *scaleRun) fail(err error) {
	msg := err.Error()
	s.firstErr.CompareAndSwap(nil, &msg)
}

func newScaleRun(ctx context.Context, b *bench) (*scaleRun, error) {
	s := &scaleRun{b: b, n: b.cfg.scaleInstances, period: b.cfg.scalePeriod, target: -1}
	if s.period <= 0 {
		s.period = b.cfg.ttl / 3
	}
	s.ledger = newExpiryLedger(s.n, b.cfg.ttl)
	s.pids = make([]int, len(b.servers))
	for i := range b.servers {
		if i < len(b.cfg.pids) {
			s.pids[i] = b.cfg.pids[i]
		} else if pid, err := findListener(b.servers[i].host); err == nil {
			s.pids[i] = pid
		}
	}
	s.rssFrom = make([]int64, len(b.servers))
	s.anonFrom = make([]int64, len(b.servers))
	for i, pid := range s.pids {
		if pid == 0 {
			continue
		}
		m, err := readMem(pid)
		if err != nil {
			return nil, fmt.Errorf("reading the memory of pid %d (%s): %v", pid, b.servers[i].host, err)
		}
		s.rssFrom[i], s.anonFrom[i] = m.rss, m.anon
	}
	s.leader = -1
	for i, srv := range b.servers {
		st, err := s.status(ctx, i)
		if err != nil {
			return nil, fmt.Errorf("%s: %v", srv.base, err)
		}
		if st.Role == "leader" {
			s.leader = i
		}
	}
	if s.leader < 0 {
		return nil, errors.New("no --http server reports the role leader")
	}
	canRestart := b.cfg.restartCmd != "" || len(b.cfg.pids) > 0
	for i := len(b.servers) - 1; i >= 0 && canRestart; i-- {
		if i != s.leader {
			s.target = i
			break
		}
	}
	s.watch = s.leader
	for i := range b.servers {
		if i != s.leader && i != s.target {
			s.watch = i
			break
		}
	}
	return s, nil
}

func (s *scaleRun) status(ctx context.Context, i int) (api.Status, error) {
	var st api.Status
	body, err := s.b.get(ctx, s.b.servers[i].base, "/.well-known/status")
	if err != nil {
		return st, err
	}
	if err := json.Unmarshal(body, &st); err != nil {
		return st, fmt.Errorf("malformed status %q: %v", body, err)
	}
	return st, nil
}

func (s *scaleRun) run(ctx context.Context) Result {
	const name = "scale"
	b := s.b
	svc, cleanup, err := b.createService(ctx, name)
	if err != nil {
		return failed(name, err)[0]
	}
	defer cleanup()
	s.svc = svc
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	// The down events, from a stream opened before the first registration.
	w := &downWatcher{s: s}
	if err := w.open(ctx, 0); err != nil {
		return failed(name, err)[0]
	}
	streamErr := make(chan error, 1)
	go w.run(ctx, streamErr)
	defer w.stop()

	// Heartbeats run from the start: each instance is heartbeated once its
	// registration has been answered, so that the first ones do not lapse
	// while the last are registered.
	hbCtx, stopHeartbeats := context.WithCancel(ctx)
	defer stopHeartbeats()
	conns, closeConns, err := b.natsConns(max(b.cfg.natsConns, 1))
	if err != nil {
		return failed(name, err)[0]
	}
	defer closeConns()
	var hbWG sync.WaitGroup
	for c, nc := range conns {
		hbWG.Add(1)
		go func() {
			defer hbWG.Done()
			s.heartbeat(hbCtx, nc, c, len(conns))
		}()
	}

	conc := min(b.cfg.concurrency, s.n)
	reg := b.load(ctx, "registering "+strconv.Itoa(s.n)+" instances", conc, 0, int64(s.n), s.registerOp(svc))
	regDone := time.Now()

	// Keep alive for --duration, restarting the follower half way.
	var restart restartResult
	restartCtx, stopRestart := context.WithCancel(ctx)
	defer stopRestart()
	restartDone := make(chan struct{})
	go func() {
		defer close(restartDone)
		if s.target < 0 {
			return
		}
		if !sleepCtx(restartCtx, b.cfg.duration/2) {
			return
		}
		restart = s.restartFollower(ctx, regDone.Add(b.cfg.duration))
	}()
	sent0 := s.hbSent.Load()
	b.progress.set("keeping "+strconv.Itoa(s.n)+" instances alive", &s.hbSent, 0, b.cfg.duration)
	var streamFailure error
	select {
	case <-time.After(b.cfg.duration):
	case streamFailure = <-streamErr:
	case <-ctx.Done():
	}
	keepAlive := time.Since(regDone)
	sentKeep := s.hbSent.Load() - sent0
	if streamFailure != nil {
		stopRestart()
	}
	<-restartDone
	// Down events decided before the end are still on their way: one
	// expiry check and the stream's delivery. A second is plenty on
	// loopback; a down event later than that is judged all the same.
	if streamFailure == nil {
		select {
		case <-time.After(time.Second):
		case streamFailure = <-streamErr:
		}
	}
	w.stop()
	stopHeartbeats()
	hbWG.Wait()

	row := Result{Workload: name, Ops: int64(s.n)}
	if keepAlive > 0 {
		row.Rate = f64(round1(float64(sentKeep) / keepAlive.Seconds()))
	}
	row.Errors = s.ledger.falseExp.Load() + reg.errs + s.failedOps.Load() + s.dropped.Load()
	var note strings.Builder
	fmt.Fprintf(&note, "%d false expiries (down < TTL %s after a heartbeat sent), %d late (harness behind), %d stray downs",
		s.ledger.falseExp.Load(), b.cfg.ttl, s.ledger.late.Load(), s.ledger.stray.Load())
	if s.ledger.firstFalse != "" {
		fmt.Fprintf(&note, " (first: %s)", s.ledger.firstFalse)
	}
	fmt.Fprintf(&note, "; registered in %s (%.0f/s, %d writers, %d failed, %d retries); kept alive %s over %d NATS conns, one heartbeat per %s, %d sent, max gap %s",
		reg.elapsed.Round(time.Millisecond), reg.rate(), conc, reg.errs, s.regRetries.Load(), keepAlive.Round(time.Second), len(conns), s.period,
		s.hbSent.Load(), time.Duration(s.ledger.maxGap.Load()).Round(time.Millisecond))
	fmt.Fprintf(&note, "; heartbeat requests: %d errors, %d no responders, %d unanswered", s.failedOps.Load(), s.dropped.Load(), s.lost.Load())
	if r := w.reconnects.Load(); r > 0 {
		fmt.Fprintf(&note, "; the event stream was reopened %d times after %s", r, w.firstBreak())
	}
	note.WriteString("; " + restart.String(b, s.target))
	rss, worst := s.rssNote(restart.newPID)
	note.WriteString("; " + rss)
	if worst > 0 {
		row.BytesPerInstance = f64(round1(worst))
	}
	fmt.Fprintf(&note, "; load average %s", loadAverage())
	row.Note = note.String()
	if p := s.firstErr.Load(); p != nil {
		row.Note += "; first error: " + *p
	} else if reg.firstErr != nil {
		row.Note += "; first registration error: " + reg.firstErr.Error()
	}
	switch {
	case w.resyncs.Load() > 0:
		row.Error = fmt.Sprintf("the event stream on %s missed events (%d resyncs after it fell behind): down events were not all judged", b.servers[s.watch].host, w.resyncs.Load())
	case streamFailure != nil:
		row.Error = fmt.Sprintf("the event stream on %s ended, down events may be missing: %v", b.servers[s.watch].host, streamFailure)
	case reg.ops < int64(s.n):
		row.Error = fmt.Sprintf("registered %d of %d instances: %v", reg.ops, s.n, reg.firstErr)
	case ctx.Err() != nil:
		row.Error = ctx.Err().Error()
	}
	return row
}

// registerOp registers instance seq over HTTP (PUT). Once it is answered,
// the ledger notes it as sent when its request was: a registration is a
// heartbeat too, and the instance's NATS heartbeats start only then (a
// heartbeat of an instance the server does not hold yet is refused).
func (s *scaleRun) registerOp(svc string) func(w int) (func(int64) error, func()) {
	return func(w int) (func(int64) error, func()) {
		d := s.b.newDoer(w)
		var body []byte
		return func(seq int64) error {
			id := instanceID(scalePrefix, seq)
			body = appendInstanceBody(body[:0], id, seq)
			r := request{method: http.MethodPut, path: instancePath(svc, id), body: body}
			// A registration answered "retry" (an election on a busy host
			// took the leader away mid-write) is sent again, as a client
			// would: the same PUT is a no-op if the first one was applied.
			var err error
			for try := 0; try < registerTries; try++ {
				if try > 0 {
					s.regRetries.Add(1)
					time.Sleep(time.Duration(try) * 200 * time.Millisecond)
				}
				t0 := time.Now()
				st, resp, derr := d.do(&r)
				if derr != nil {
					return derr
				}
				if st == http.StatusOK {
					s.ledger.registeredAt(int(seq), t0)
					return nil
				}
				err = httpError(st, resp)
				if ae := (*api.Error)(nil); !errors.As(err, &ae) || !ae.Retry {
					return err
				}
			}
			return err
		}, d.close
	}
}

// registerTries is how many times a registration answered with a
// retryable error is sent before it counts as failed.
const registerTries = 5

// markerTimeout is how long a heartbeat request may go unanswered before it
// is taken as lost (its server went away, as the restarted follower does)
// and the window reopens, so that a lost answer never stalls the heartbeats.
func (s *scaleRun) markerTimeout() time.Duration { return min(5*time.Second, s.period/2) }

// heartbeat keeps instances c, c+k, c+2k, ... alive over nc: one pass over
// them per period, paced evenly across it, with heartbeat-nats's flow
// control (a request behind every batch, a bounded window of them).
func (s *scaleRun) heartbeat(ctx context.Context, nc *nats.Conn, c, k int) {
	share := (s.n - c + k - 1) / k
	if share <= 0 {
		return
	}
	subj := heartbeatSubject(s.svc)
	inbox := nats.NewInbox()
	replies := make(chan *nats.Msg, 4*pubMarkers)
	sub, err := nc.ChanSubscribe(inbox+".*", replies)
	if err != nil {
		s.fail(err)
		return
	}
	defer sub.Unsubscribe()
	pending := map[uint64]time.Time{}
	var seq uint64
	batch := min(pubBatch, max(1, share/10))
	window := pubMarkers
	answer := func(m *nats.Msg) {
		i := strings.LastIndexByte(m.Subject, '.')
		id, err := strconv.ParseUint(m.Subject[i+1:], 10, 64)
		if err != nil {
			return
		}
		if _, ok := pending[id]; !ok {
			return // answered after it was given up for lost
		}
		delete(pending, id)
		if m.Header.Get("Status") == "503" {
			s.dropped.Add(1)
		} else if err := heartbeatReply(m.Data); err != nil {
			s.failedOps.Add(1)
			s.fail(fmt.Errorf("heartbeat request: %v", err))
		}
	}
	// await waits for an answer, or gives up the requests older than the
	// marker timeout.
	await := func() bool {
		oldest := time.Time{}
		for _, t := range pending {
			if oldest.IsZero() || t.Before(oldest) {
				oldest = t
			}
		}
		timer := time.NewTimer(time.Until(oldest.Add(s.markerTimeout())))
		defer timer.Stop()
		select {
		case m := <-replies:
			answer(m)
		case <-timer.C:
			for id, t := range pending {
				if time.Since(t) >= s.markerTimeout() {
					delete(pending, id)
					s.lost.Add(1)
				}
			}
		case <-ctx.Done():
			return false
		}
		return true
	}
	var body []byte
	published := make([]int, 0, batch)
	for ctx.Err() == nil {
		roundStart := time.Now()
		for pos := 0; pos < share && ctx.Err() == nil; pos += batch {
			// Instance pos of this pass is due at pos/share of the period.
			due := roundStart.Add(time.Duration(int64(s.period) * int64(pos) / int64(share)))
			if wait := time.Until(due); wait > 0 && !sleepCtx(ctx, wait) {
				return
			}
			published = published[:0]
			for p := pos; p < min(pos+batch, share); p++ {
				i := c + p*k
				if !s.ledger.registered(i) {
					continue
				}
				body = appendInstanceBody(body[:0], instanceID(scalePrefix, int64(i)), int64(i))
				if err := nc.Publish(subj, body); err != nil {
					// Not sent (say, the reconnect buffer is full while
					// its server restarts): not recorded as sent either.
					s.fail(err)
					continue
				}
				published = append(published, i)
			}
			if len(published) == 0 {
				continue
			}
			// The marker is one more heartbeat, of the batch's last instance.
			seq++
			if err := nc.PublishRequest(subj, inbox+"."+strconv.FormatUint(seq, 10), body); err != nil {
				s.fail(err)
			} else {
				pending[seq] = time.Now()
			}
			now := time.Now()
			for _, i := range published {
				s.ledger.sent(i, now)
			}
			s.hbSent.Add(int64(len(published)))
			for len(pending) >= window {
				if !await() {
					return
				}
			}
			// Answers that came meanwhile free the window early.
			for drained := false; !drained; {
				select {
				case m := <-replies:
					answer(m)
				default:
					drained = true
				}
			}
		}
		if !sleepCtx(ctx, time.Until(roundStart.Add(s.period))) {
			return
		}
	}
}

// restartResult is what restarting the follower measured.
type restartResult struct {
	done    bool
	err     error
	took    time.Duration // the restart command or the relaunch
	catchUp time.Duration // restart begun -> applied index >= the leader's
	index   uint64
	newPID  int
}

func (r restartResult) String(b *bench, target int) string {
	switch {
	case target < 0:
		return "no follower restarted (give --pids or --restart-cmd and several --http servers)"
	case r.err != nil:
		return fmt.Sprintf("restarting follower %s FAILED: %v", b.servers[target].host, r.err)
	case !r.done:
		return fmt.Sprintf("follower %s not restarted (the run ended first)", b.servers[target].host)
	}
	return fmt.Sprintf("follower %s restarted (took %s, new pid %d): caught up with the leader's applied index %d in %s from the restart, snapshot restore and log replay included",
		b.servers[target].host, r.took.Round(time.Millisecond), r.newPID, r.index, r.catchUp.Round(time.Millisecond))
}

// restartFollower restarts the target server and waits, until deadline at
// the latest, for its applied index to reach the leader's.
func (s *scaleRun) restartFollower(ctx context.Context, deadline time.Time) restartResult {
	b := s.b
	var r restartResult
	// Leadership may have moved since the start (elections on a busy
	// host): the follower and the leader are chosen now.
	s.pickRoles(ctx)
	t0 := time.Now()
	if b.cfg.restartCmd != "" {
		r.newPID, r.err = runRestartCmd(ctx, b.cfg.restartCmd, b.servers[s.target], s.target, s.pids[s.target])
	} else {
		r.newPID, r.err = relaunch(ctx, s.pids[s.target], b.cfg.restartLog)
	}
	r.took = time.Since(t0)
	if r.err != nil {
		return r
	}
	r.done = true
	for {
		if time.Now().After(deadline.Add(time.Minute)) {
			r.err = fmt.Errorf("restarted, but its applied index had not reached the leader's %s after the restart", time.Since(t0).Round(time.Second))
			return r
		}
		if !sleepCtx(ctx, 100*time.Millisecond) {
			r.err = ctx.Err()
			return r
		}
		fst, err := s.status(ctx, s.target)
		if err != nil || fst.Leader == "" {
			continue
		}
		lst, err := s.status(ctx, s.leader)
		if err != nil {
			continue
		}
		if fst.AppliedIndex >= lst.AppliedIndex {
			r.catchUp, r.index = time.Since(t0), lst.AppliedIndex
			break
		}
	}
	if r.newPID == 0 {
		r.newPID, _ = findListener(b.servers[s.target].host)
	}
	s.pids[s.target] = r.newPID
	return r
}

// pickRoles sets s.leader to the server that leads now and s.target to a
// follower other than the watched server where there is one.
func (s *scaleRun) pickRoles(ctx context.Context) {
	leader := -1
	for i := range s.b.servers {
		if st, err := s.status(ctx, i); err == nil && st.Role == "leader" {
			leader = i
		}
	}
	if leader < 0 || leader == s.leader {
		return
	}
	s.leader = leader
	s.target = -1
	for i := len(s.b.servers) - 1; i >= 0; i-- {
		if i != leader && (s.target < 0 || s.target == s.watch) {
			s.target = i
		}
	}
}

// runRestartCmd runs cmd with sh -c and the server to restart in its
// environment. The command must return once the old process has exited;
// it may print the new process's pid as its last line of output.
func runRestartCmd(ctx context.Context, cmdline string, srv server, i, pid int) (int, error) {
	cmd := exec.CommandContext(ctx, "sh", "-c", cmdline)
	cmd.Env = append(os.Environ(),
		"DISCOVERD_RESTART_URL="+srv.base,
		"DISCOVERD_RESTART_ADDR="+srv.host,
		"DISCOVERD_RESTART_INDEX="+strconv.Itoa(i),
		"DISCOVERD_RESTART_PID="+strconv.Itoa(pid))
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return 0, fmt.Errorf("--restart-cmd: %v", err)
	}
	lines := strings.Fields(string(out))
	if len(lines) > 0 {
		if p, err := strconv.Atoi(lines[len(lines)-1]); err == nil {
			return p, nil
		}
	}
	return 0, nil
}

// relaunch stops process pid (SIGTERM, SIGKILL after 30 s) and starts it
// again with the same command line, directory and environment, in a process
// group of its own that outlives this harness, its output appended to
// logFile (default: a file in the temp dir). It returns the new pid.
func relaunch(ctx context.Context, pid int, logFile string) (int, error) {
	if pid <= 0 {
		return 0, errors.New("the follower's pid is unknown")
	}
	proc := "/proc/" + strconv.Itoa(pid)
	rawArgs, err := os.ReadFile(proc + "/cmdline")
	if err != nil {
		return 0, err
	}
	args := strings.Split(strings.TrimRight(string(rawArgs), "\x00"), "\x00")
	dir, err := os.Readlink(proc + "/cwd")
	if err != nil {
		return 0, err
	}
	rawEnv, err := os.ReadFile(proc + "/environ")
	if err != nil {
		return 0, err
	}
	env := strings.Split(strings.TrimRight(string(rawEnv), "\x00"), "\x00")
	exe := args[0]
	if !filepath.IsAbs(exe) && strings.ContainsRune(exe, '/') {
		exe = filepath.Join(dir, exe)
	}
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		return 0, err
	}
	killAt := time.Now().Add(30 * time.Second)
	for processAlive(pid) {
		if time.Now().After(killAt) {
			syscall.Kill(pid, syscall.SIGKILL)
		}
		if !sleepCtx(ctx, 50*time.Millisecond) {
			return 0, ctx.Err()
		}
	}
	if logFile == "" {
		logFile = filepath.Join(os.TempDir(), fmt.Sprintf("discoverd-restarted-%d.log", pid))
	}
	f, err := os.OpenFile(logFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	cmd := exec.Command(exe, args[1:]...)
	cmd.Dir, cmd.Env, cmd.Stdout, cmd.Stderr = dir, env, f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	newPID := cmd.Process.Pid
	go cmd.Wait() // reaped if it exits while this harness runs
	return newPID, nil
}

// processAlive says whether pid runs (a zombie has exited).
func processAlive(pid int) bool {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(data, ')')
	return i < 0 || i+2 >= len(data) || data[i+2] != 'Z'
}

// rssNote is each voter's RSS growth per instance, and the largest.
func (s *scaleRun) rssNote(newPID int) (string, float64) {
	var parts []string
	worst := 0.0
	for i, pid := range s.pids {
		host := s.b.servers[i].host
		if pid == 0 {
			parts = append(parts, host+" ?")
			continue
		}
		m, err := readMem(pid)
		if err != nil {
			parts = append(parts, fmt.Sprintf("%s ? (%v)", host, err))
			continue
		}
		per := float64(m.rss-s.rssFrom[i]) / float64(s.n)
		anon := float64(m.anon-s.anonFrom[i]) / float64(s.n)
		worst = max(worst, per)
		// The rest is file-backed: mostly the Raft log's mapped bolt file.
		p := fmt.Sprintf("%s %.0f B = anon %.0f + file %.0f (%.0f MiB)", host, per, anon, per-anon, mib(m.rss))
		switch i {
		case s.leader:
			p += " leader"
		case s.target:
			if newPID != 0 {
				p += " restarted"
			}
		}
		parts = append(parts, p)
	}
	return "RSS growth per instance: " + strings.Join(parts, ", "), worst
}

// loadAverage is the 1, 5 and 15 minute load averages.
func loadAverage() string {
	f, err := os.Open("/proc/loadavg")
	if err != nil {
		return "?"
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	if !sc.Scan() {
		return "?"
	}
	fields := strings.Fields(sc.Text())
	if len(fields) < 3 {
		return "?"
	}
	return strings.Join(fields[:3], " ")
}

// downWatcher reads the service's instance events on the watched server
// and judges every down event. A stream the server closes (a subscriber
// that fell behind, as a burst of expiries larger than the server's
// per-stream buffer makes it) is reopened from the last event seen
// (Last-Event-ID): the server replays what it still holds, or sends a
// resync, which is counted, since the down events it skips were not judged.
type downWatcher struct {
	s          *scaleRun
	mu         sync.Mutex
	st         *sseStream
	stopped    bool
	lastIndex  uint64
	breakErr   error
	reconnects atomic.Int64
	resyncs    atomic.Int64
}

// open opens the stream, after event index after (0: from the current
// state), and reads its prelude.
func (w *downWatcher) open(ctx context.Context, after uint64) error {
	b := w.s.b
	srv := b.servers[w.s.watch]
	path := "/services/" + w.s.svc + "/instances"
	if len(b.servers) > 1 {
		path += "?consistent=true"
	}
	sctx, cancel := context.WithCancel(ctx)
	req, err := http.NewRequestWithContext(sctx, http.MethodGet, srv.base+path, nil)
	if err != nil {
		cancel()
		return err
	}
	req.Header.Set("Accept", "text/event-stream")
	if after > 0 {
		req.Header.Set("Last-Event-ID", strconv.FormatUint(after, 10))
	}
	resp, err := b.client.Do(req)
	if err != nil {
		cancel()
		return err
	}
	if resp.StatusCode != http.StatusOK {
		body := make([]byte, 4096)
		n, _ := resp.Body.Read(body)
		resp.Body.Close()
		cancel()
		return fmt.Errorf("GET %s: %w", path, httpError(resp.StatusCode, body[:n]))
	}
	st := &sseStream{body: resp.Body, br: bufio.NewReaderSize(resp.Body, 64<<10), cancel: cancel}
	if after == 0 {
		if err := st.untilCurrent(); err != nil {
			st.close()
			return err
		}
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.stopped {
		st.close()
		return errors.New("stopped")
	}
	w.st = st
	return nil
}

// run judges the down events until stop, reopening a broken stream; it
// sends to errc when it cannot.
func (w *downWatcher) run(ctx context.Context, errc chan<- error) {
	for {
		w.mu.Lock()
		st := w.st
		w.mu.Unlock()
		ev, err := st.next()
		if err == nil {
			if ev.Index > w.lastIndex {
				w.lastIndex = ev.Index
			}
			switch {
			case ev.Kind == api.EventResync:
				w.resyncs.Add(1)
			case ev.Kind == api.EventDown && ev.Instance != nil && !w.isStopped():
				w.s.ledger.classify(scaleIndex(ev.Instance.ID, scalePrefix, w.s.n), time.Now())
			}
			continue
		}
		if w.isStopped() {
			return
		}
		st.close()
		if w.reconnects.Add(1) == 1 {
			w.mu.Lock()
			w.breakErr = err
			w.mu.Unlock()
		}
		var oerr error
		for try := 0; try < 10; try++ {
			if oerr = w.open(ctx, w.lastIndex); oerr == nil || w.isStopped() || !sleepCtx(ctx, time.Second) {
				break
			}
		}
		if oerr != nil {
			if !w.isStopped() {
				errc <- fmt.Errorf("%v, and reopening it failed: %v", err, oerr)
			}
			return
		}
	}
}

func (w *downWatcher) isStopped() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.stopped
}

func (w *downWatcher) stop() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.stopped {
		w.stopped = true
		w.st.close()
	}
}

func (w *downWatcher) firstBreak() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.breakErr == nil {
		return "?"
	}
	return w.breakErr.Error()
}
