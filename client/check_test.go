package client

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

const (
	checkTTL      = time.Second
	checkInterval = 200 * time.Millisecond
	// expiryCheck is testnode's expiry check interval.
	expiryCheck = 100 * time.Millisecond
	// busySlack is what a loaded machine may add to a bound measured in
	// check intervals: scheduling, the Raft apply and the event stream.
	busySlack = 3 * time.Second
)

// checkedWatch creates service and watches it past its empty prelude.
func checkedWatch(t *testing.T, ctx context.Context, c *Client, service string) *Watcher {
	t.Helper()
	if err := c.AddService(ctx, service, nil); err != nil {
		t.Fatal(err)
	}
	w, err := c.Watch(ctx, service)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	// A prelude holds no leader event when there is no leader.
	if got := nextEvents(t, w, 1, 5*time.Second); !reflect.DeepEqual(got, []string{"current"}) {
		t.Fatalf("prelude = %q", got)
	}
	return w
}

// within waits for the events want on w and fails unless they arrive within
// bound (plus busySlack) of since; it returns how long they took.
func within(t *testing.T, w *Watcher, want []string, since time.Time, bound time.Duration) time.Duration {
	t.Helper()
	got := nextEvents(t, w, len(want), bound+busySlack)
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("events = %q, want %q", got, want)
	}
	took := time.Since(since)
	if took > bound+busySlack {
		t.Fatalf("%q took %v, bound %v (+%v for a busy machine)", want, took, bound, busySlack)
	}
	return took
}

// nextState reads the next change of h's check state.
func nextState(t *testing.T, h *Heartbeater) CheckState {
	t.Helper()
	select {
	case s, ok := <-h.Changes():
		if !ok {
			t.Fatal("Changes closed")
		}
		return s
	case <-time.After(10 * time.Second):
		t.Fatalf("no state change; Status %v", h.Status())
	}
	return CheckState{}
}

// results records a check's results in order.
type results struct {
	mu  sync.Mutex
	all []bool
}

func (r *results) wrap(c Check) Check {
	return CheckFunc(func(ctx context.Context) error {
		err := c.Check(ctx)
		r.mu.Lock()
		r.all = append(r.all, err == nil)
		r.mu.Unlock()
		return err
	})
}

// trailing is how many results in a row at the end are ok.
func (r *results) trailing(ok bool) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for i := len(r.all) - 1; i >= 0 && r.all[i] == ok; i-- {
		n++
	}
	return n
}

func (r *results) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.all)
}

func TestHTTPCheckFlips(t *testing.T) {
	t.Parallel()
	s := startServer(t, checkTTL)
	c := NewWithOptions([]string{s.URL()}, WithTTL(checkTTL))
	defer c.Close()
	ctx := testCtx(t, 60*time.Second)
	w := checkedWatch(t, ctx, c, "web")

	var healthy atomic.Bool
	healthy.Store(true)
	app := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, _ *http.Request) {
		if healthy.Load() {
			rw.WriteHeader(http.StatusOK)
			return
		}
		http.Error(rw, "not ready", http.StatusInternalServerError)
	}))
	defer app.Close()
	var res results
	start := time.Now()
	h, err := c.Register(ctx, "web", "10.0.0.1:80", nil,
		WithCheck(res.wrap(HTTPCheck(app.URL)), CheckInterval(checkInterval)))
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if st := h.Status(); st.Status != CheckUnknown {
		t.Fatalf("Status right after Register = %v", st)
	}

	// Registered after 2 passes: the second is one interval after the first.
	within(t, w, []string{"up 10.0.0.1:80", "leader 10.0.0.1:80"}, start, DefaultCheckPasses*checkInterval)
	if n := res.trailing(true); n < DefaultCheckPasses {
		t.Fatalf("registered after %d passes in a row", n)
	}
	if st := nextState(t, h); st.Status != CheckPassing || st.Err != nil {
		t.Fatalf("state = %v", st)
	}
	firstIndex := h.Instance().Index
	if firstIndex == 0 {
		t.Fatal("no index once registered")
	}

	// 500: deregistered after 3 failures in a row.
	healthy.Store(false)
	flipped := time.Now()
	within(t, w, []string{"down 10.0.0.1:80", "leader -"}, flipped, DefaultCheckFailures*checkInterval+expiryCheck)
	if n := res.trailing(false); n < DefaultCheckFailures {
		t.Fatalf("deregistered after %d failures in a row", n)
	}
	st := nextState(t, h)
	if st.Status != CheckFailing || st.Err == nil || !strings.Contains(st.Err.Error(), "500") {
		t.Fatalf("state = %v", st)
	}
	// No heartbeat keeps it or brings it back while it fails, for longer
	// than a TTL.
	noEvent(t, w, 2*checkTTL)
	if insts, err := c.Instances(ctx, "web"); err != nil || len(insts) != 0 {
		t.Fatalf("instances while failing = %v, %v", insts, err)
	}
	if h.Status().Status != CheckFailing {
		t.Fatalf("Status = %v", h.Status())
	}
	// SetMeta of an unregistered instance registers nothing: the meta goes
	// out with the next registration.
	if h.Instance().Index != 0 {
		t.Fatalf("index while deregistered = %d", h.Instance().Index)
	}
	if err := h.SetMeta(ctx, map[string]string{"v": "2"}); err != nil {
		t.Fatal(err)
	}
	if insts, err := c.Instances(ctx, "web"); err != nil || len(insts) != 0 {
		t.Fatalf("instances after SetMeta while failing = %v, %v", insts, err)
	}

	// 200 again: registered again, with the new meta and a new index.
	healthy.Store(true)
	flipped = time.Now()
	within(t, w, []string{"up 10.0.0.1:80", "leader 10.0.0.1:80"}, flipped, DefaultCheckPasses*checkInterval)
	if st := nextState(t, h); st.Status != CheckPassing {
		t.Fatalf("state = %v", st)
	}
	if insts, err := c.Instances(ctx, "web"); err != nil || len(insts) != 1 || insts[0].Meta["v"] != "2" || insts[0].Index <= firstIndex {
		t.Fatalf("instances registered again = %v, %v (first index %d)", insts, err, firstIndex)
	}
	// Kept alive by heartbeats past several TTLs.
	noEvent(t, w, 3*checkTTL)

	// Close stops the checks and deregisters at once.
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
	if insts, err := c.Instances(ctx, "web"); err != nil || len(insts) != 0 {
		t.Fatalf("instances after Close = %v, %v", insts, err)
	}
	within(t, w, []string{"down 10.0.0.1:80", "leader -"}, time.Now(), 0)
	if _, ok := <-h.Changes(); ok {
		t.Fatal("Changes not closed by Close")
	}
	n := res.count()
	noEvent(t, w, 3*checkInterval)
	if got := res.count(); got != n {
		t.Fatalf("%d checks after Close", got-n)
	}
}

func TestTCPCheckClosesAndReopens(t *testing.T) {
	t.Parallel()
	s := startServer(t, checkTTL)
	c := NewWithOptions([]string{s.URL()}, WithTTL(checkTTL))
	defer c.Close()
	ctx := testCtx(t, 60*time.Second)
	w := checkedWatch(t, ctx, c, "db")

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	serve := func(ln net.Listener) {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			conn.Close()
		}
	}
	go serve(ln)

	// Thresholds other than the defaults: 3 passes, 1 failure.
	const passes, failures = 3, 1
	var res results
	start := time.Now()
	h, err := c.Register(ctx, "db", addr, nil, InstanceID("db-1"),
		WithCheck(res.wrap(TCPCheck(addr)), CheckInterval(checkInterval), CheckThresholds(passes, failures)))
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	up := []string{"up " + addr, "leader " + addr}
	down := []string{"down " + addr, "leader -"}
	within(t, w, up, start, passes*checkInterval)
	if n := res.trailing(true); n < passes {
		t.Fatalf("registered after %d passes in a row", n)
	}

	ln.Close()
	closed := time.Now()
	within(t, w, down, closed, failures*checkInterval+expiryCheck)
	if st := h.Status(); st.Status != CheckFailing || st.Err == nil {
		t.Fatalf("Status with the listener closed = %v", st)
	}

	ln, err = net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("reopening %s: %v", addr, err)
	}
	defer ln.Close()
	go serve(ln)
	reopened := time.Now()
	within(t, w, up, reopened, passes*checkInterval)
	if n := res.trailing(true); n < passes {
		t.Fatalf("registered again after %d passes in a row", n)
	}
	want := []CheckStatus{CheckPassing, CheckFailing, CheckPassing}
	for _, ws := range want {
		if st := nextState(t, h); st.Status != ws {
			t.Fatalf("state = %v, want %s", st, ws)
		}
	}
}

func TestHangingCheckIsBoundedByItsTimeout(t *testing.T) {
	t.Parallel()
	s := startServer(t, checkTTL)
	c := NewWithOptions([]string{s.URL()}, WithTTL(checkTTL))
	defer c.Close()
	ctx := testCtx(t, 60*time.Second)
	if err := c.AddService(ctx, "web", nil); err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	defer close(release)
	const timeout = 100 * time.Millisecond
	for _, tc := range []struct {
		name  string
		check CheckFunc
	}{
		{"waits for its context", func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() }},
		{"ignores its context", func(context.Context) error { <-release; return nil }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			h, err := c.Register(ctx, "web", "10.0.0.1:80", nil,
				WithCheck(tc.check, CheckInterval(checkInterval), CheckTimeout(timeout)))
			if err != nil {
				t.Fatal(err)
			}
			defer h.Close()
			st := nextState(t, h)
			took := time.Since(start)
			if st.Status != CheckFailing || st.Err == nil || !strings.Contains(st.Err.Error(), "timed out after 100ms") {
				t.Fatalf("state = %v", st)
			}
			// The third check starts 2 intervals after the first and ends
			// at its timeout.
			lower := (DefaultCheckFailures-1)*checkInterval + timeout
			if took < lower || took > lower+busySlack {
				t.Fatalf("failing after %v, want %v (+%v for a busy machine)", took, lower, busySlack)
			}
			if insts, err := c.Instances(ctx, "web"); err != nil || len(insts) != 0 {
				t.Fatalf("instances of a failing check = %v, %v", insts, err)
			}
			// Close is not held up by a check that never returns.
			closed := make(chan error, 1)
			go func() { closed <- h.Close() }()
			select {
			case err := <-closed:
				if err != nil {
					t.Fatal(err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("Close hangs on a hanging check")
			}
		})
	}
}

func TestCheckedRegisterErrors(t *testing.T) {
	t.Parallel()
	s := startServer(t, checkTTL)
	c := NewWithOptions([]string{s.URL()}, WithTTL(checkTTL))
	defer c.Close()
	ctx := testCtx(t, 20*time.Second)
	ok := CheckFunc(func(context.Context) error { return nil })
	if _, err := c.Register(ctx, "nope", "10.0.0.1:80", nil, WithCheck(ok)); !IsNotFound(err) {
		t.Fatalf("Register in an unknown service = %v", err)
	}
	if _, err := c.Register(ctx, "web", "nope", nil, WithCheck(ok)); err == nil || !strings.Contains(err.Error(), "host:port") {
		t.Fatalf("Register of a bad addr = %v", err)
	}
	if _, err := c.Register(ctx, "web", "10.0.0.1:80", nil, WithCheck(nil)); err == nil || !strings.Contains(err.Error(), "no check") {
		t.Fatalf("Register WithCheck(nil) = %v", err)
	}

	// Without a check the state is passing, and Changes closes on Close.
	if err := c.AddService(ctx, "web", nil); err != nil {
		t.Fatal(err)
	}
	h, err := c.Register(ctx, "web", "10.0.0.1:80", nil)
	if err != nil {
		t.Fatal(err)
	}
	if st := h.Status(); st.Status != CheckPassing || st.Err != nil {
		t.Fatalf("Status without a check = %v", st)
	}
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
	if _, ok := <-h.Changes(); ok {
		t.Fatal("Changes without a check sent a state")
	}
}

// Over NATS the registration's answer carries no index: a checked instance
// learns it over HTTP, and learns a new one when it registers again.
func TestCheckOverNATS(t *testing.T) {
	t.Parallel()
	s := startServerNATS(t, checkTTL)
	c := NewWithOptions([]string{s.URL()}, WithTTL(checkTTL), WithNATS(s.NATSURL()))
	defer c.Close()
	ctx := testCtx(t, 60*time.Second)
	w := checkedWatch(t, ctx, c, "web")
	var healthy atomic.Bool
	healthy.Store(true)
	check := CheckFunc(func(context.Context) error {
		if healthy.Load() {
			return nil
		}
		return errors.New("unhealthy")
	})
	h, err := c.Register(ctx, "web", "10.0.0.1:80", nil, WithCheck(check, CheckInterval(checkInterval)))
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	var indexes []uint64
	for range 2 {
		within(t, w, []string{"up 10.0.0.1:80", "leader 10.0.0.1:80"}, time.Now(), DefaultCheckPasses*checkInterval)
		if st := nextState(t, h); st.Status != CheckPassing {
			t.Fatalf("state = %v", st)
		}
		insts, err := c.Instances(ctx, "web")
		if err != nil || len(insts) != 1 || h.Instance().Index != insts[0].Index {
			t.Fatalf("Instance %+v, listed %v, %v", h.Instance(), insts, err)
		}
		indexes = append(indexes, insts[0].Index)
		healthy.Store(false)
		within(t, w, []string{"down 10.0.0.1:80", "leader -"}, time.Now(), DefaultCheckFailures*checkInterval+expiryCheck)
		if st := nextState(t, h); st.Status != CheckFailing {
			t.Fatalf("state = %v", st)
		}
		healthy.Store(true)
	}
	if indexes[1] <= indexes[0] {
		t.Fatalf("indexes of the two registrations = %v", indexes)
	}
}
