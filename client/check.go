package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"
)

// A heartbeat proves only that a process is alive; a health check proves
// that it serves. With WithCheck the Heartbeater registers the instance only
// once its check has passed a few times in a row, and deregisters it (and
// sends no more heartbeats) once it has failed a few times in a row, so the
// service lists it only while it serves.

// Check says whether an instance is healthy: nil when it is, else why not.
// It must return when ctx ends (the check's timeout or Close).
type Check interface {
	Check(ctx context.Context) error
}

// CheckFunc is a Check written as a function.
type CheckFunc func(ctx context.Context) error

// Check calls f.
func (f CheckFunc) Check(ctx context.Context) error { return f(ctx) }

// checkHTTPClient is shared by every HTTPCheck: no redirects are followed
// (a redirect is not a 2xx) and connections are not kept idle between
// checks of a distant interval.
var checkHTTPClient = &http.Client{
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	Transport:     &http.Transport{Proxy: nil, DisableKeepAlives: true},
}

// HTTPCheck passes when a GET of url answers with a 2xx status (a redirect
// is not followed, so it fails).
func HTTPCheck(url string) Check {
	return CheckFunc(func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return fmt.Errorf("http check: %w", err)
		}
		resp, err := checkHTTPClient.Do(req)
		if err != nil {
			return fmt.Errorf("http check: %w", err)
		}
		defer resp.Body.Close()
		// Read a little of the body so that a slow body is bounded by the
		// timeout too, and the status line is not all that is checked.
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
		if resp.StatusCode < 200 || resp.StatusCode > 299 {
			return fmt.Errorf("http check: GET %s: %s", url, resp.Status)
		}
		return nil
	})
}

// TCPCheck passes when a TCP connection to addr (host:port) opens.
func TCPCheck(addr string) Check {
	return CheckFunc(func(ctx context.Context) error {
		var d net.Dialer
		conn, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return fmt.Errorf("tcp check: %w", err)
		}
		return conn.Close()
	})
}

// Default check settings (see WithCheck).
const (
	DefaultCheckInterval = 5 * time.Second
	DefaultCheckTimeout  = 2 * time.Second
	DefaultCheckPasses   = 2 // passes in a row before the instance is registered
	DefaultCheckFailures = 3 // failures in a row before it is deregistered
)

// CheckOption configures a check (see WithCheck).
type CheckOption func(*checkConfig)

type checkConfig struct {
	check    Check
	interval time.Duration
	timeout  time.Duration
	passes   int
	failures int
}

// CheckInterval sets the time between the starts of two checks (default
// DefaultCheckInterval).
func CheckInterval(d time.Duration) CheckOption {
	return func(c *checkConfig) {
		if d > 0 {
			c.interval = d
		}
	}
}

// CheckTimeout bounds one check: a check still running after d fails
// (default DefaultCheckTimeout, and never more than the interval).
func CheckTimeout(d time.Duration) CheckOption {
	return func(c *checkConfig) {
		if d > 0 {
			c.timeout = d
		}
	}
}

// CheckThresholds sets how many passes in a row register the instance and
// how many failures in a row deregister it (defaults DefaultCheckPasses and
// DefaultCheckFailures; values below 1 keep the default).
func CheckThresholds(passes, failures int) CheckOption {
	return func(c *checkConfig) {
		if passes > 0 {
			c.passes = passes
		}
		if failures > 0 {
			c.failures = failures
		}
	}
}

// WithCheck makes Register and RegisterInstance register the instance only
// while check passes. Register then returns at once, before the first check,
// with the instance not yet registered: the check runs every interval, and
// after the passes threshold in a row the instance is registered and kept
// alive by heartbeats; after the failures threshold in a row it is
// deregistered and no heartbeat is sent until the check passes the
// threshold again. Heartbeater.Status and Heartbeater.Changes report it.
// Close stops the check and deregisters.
func WithCheck(check Check, opts ...CheckOption) RegisterOption {
	return func(c *regConfig) {
		cc := &checkConfig{
			check:    check,
			interval: DefaultCheckInterval,
			timeout:  DefaultCheckTimeout,
			passes:   DefaultCheckPasses,
			failures: DefaultCheckFailures,
		}
		for _, o := range opts {
			o(cc)
		}
		cc.timeout = min(cc.timeout, cc.interval)
		c.check = cc
	}
}

// CheckStatus is the state of an instance's health check.
type CheckStatus string

const (
	// CheckUnknown: the check has not yet reached either threshold since
	// Register; the instance is not registered.
	CheckUnknown CheckStatus = "unknown"
	// CheckPassing: the check passed the passes threshold in a row; the
	// instance is registered and heartbeats keep it alive. It is also the
	// status of a registration without a check.
	CheckPassing CheckStatus = "passing"
	// CheckFailing: the check failed the failures threshold in a row; the
	// instance is deregistered and sends no heartbeats.
	CheckFailing CheckStatus = "failing"
)

// CheckState is a health check's status and, when it is not passing, the
// error of its last check.
type CheckState struct {
	Status CheckStatus
	Err    error
	// Since is when the status began.
	Since time.Time
}

func (s CheckState) String() string {
	if s.Err != nil {
		return fmt.Sprintf("%s: %v", s.Status, s.Err)
	}
	return string(s.Status)
}

// changesBuffer is how many state changes Changes holds for a slow reader;
// when it is full the oldest is dropped, so the last one always arrives.
const changesBuffer = 16

// Status is the state of the instance's health check. Without a check it is
// CheckPassing.
func (h *Heartbeater) Status() CheckState {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.state
}

// Changes sends each change of Status, in order (the oldest dropped when
// the reader falls behind by many). It is closed when the Heartbeater is
// stopped or closed. Without a check it sends nothing and is closed by Stop
// and Close too.
func (h *Heartbeater) Changes() <-chan CheckState { return h.changes }

// setState records a new check state and sends it on Changes without ever
// blocking the check loop.
func (h *Heartbeater) setState(s CheckState) {
	h.mu.Lock()
	h.state = s
	h.mu.Unlock()
	h.notify(s)
}

// notify sends s on Changes, dropping the oldest change when the reader is
// behind.
func (h *Heartbeater) notify(s CheckState) {
	for {
		select {
		case h.changes <- s:
			return
		default:
		}
		select {
		case <-h.changes: // drop the oldest
		default:
		}
	}
}

// runCheck runs the check every interval and sends the results to results
// until the Heartbeater stops. The first check starts at once.
func (h *Heartbeater) runCheck(cc *checkConfig, results chan<- error) {
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-h.stop:
			return
		case <-t.C:
		}
		start := time.Now()
		err := h.checkOnce(cc)
		select {
		case <-h.stop:
			return
		case results <- err:
		}
		t.Reset(max(cc.interval-time.Since(start), 0))
	}
}

// checkOnce runs one check bounded by its timeout: a check that ignores its
// context still fails at the timeout (its goroutine is left to finish).
func (h *Heartbeater) checkOnce(cc *checkConfig) (err error) {
	ctx, cancel := context.WithTimeout(h.ctx, cc.timeout)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		defer func() {
			if r := recover(); r != nil {
				done <- fmt.Errorf("check panicked: %v", r)
			}
		}()
		done <- cc.check.Check(ctx)
	}()
	select {
	case err = <-done:
	case <-ctx.Done():
		err = ctx.Err()
	}
	if err != nil && errors.Is(err, context.DeadlineExceeded) && ctx.Err() != nil {
		err = fmt.Errorf("check timed out after %v", cc.timeout)
	}
	return err
}

// runChecked is the loop of a checked Heartbeater: it counts check results,
// registers the instance after the passes threshold, heartbeats only while
// registered, and deregisters after the failures threshold.
func (h *Heartbeater) runChecked(cc *checkConfig) {
	defer close(h.done)
	defer close(h.changes)
	results := make(chan error)
	go h.runCheck(cc, results)
	beat := time.NewTimer(time.Hour)
	beat.Stop()
	defer beat.Stop()
	var passes, failures int
	// heartbeat sends one heartbeat and schedules the next.
	heartbeat := func() {
		if err := h.beat(); err != nil {
			h.failed(err)
			beat.Reset(h.retryDelay())
			return
		}
		h.learnIndex()
		beat.Reset(h.interval())
	}
	for {
		select {
		case <-h.stop:
			return
		case err := <-results:
			if err == nil {
				passes, failures = passes+1, 0
			} else {
				passes, failures = 0, failures+1
			}
			status := h.Status().Status
			switch {
			case err == nil && passes >= cc.passes && status != CheckPassing:
				h.mu.Lock()
				h.lastOK = time.Now() // failures of the heartbeats count from now
				h.lastConfirmed = time.Time{}
				h.registered = true
				h.mu.Unlock()
				// Register before reporting it, so that a reader of
				// Changes sees the instance's index (a failed attempt is
				// retried like any heartbeat).
				heartbeat()
				h.setState(CheckState{Status: CheckPassing, Since: time.Now()})
			case err != nil && failures >= cc.failures && status != CheckFailing:
				beat.Stop()
				// Unregistered before the DELETE, so that a SetMeta sends
				// nothing after it; reported after it, so that a reader of
				// Changes finds the instance gone.
				st := CheckState{Status: CheckFailing, Err: err, Since: time.Now()}
				h.mu.Lock()
				h.registered = false
				h.state = st
				h.mu.Unlock()
				h.deregister()
				h.notify(st)
			case err != nil && status != CheckPassing:
				// Keep the latest reason while not passing.
				h.mu.Lock()
				h.state.Err = err
				h.mu.Unlock()
			}
		case <-beat.C:
			h.mu.Lock()
			registered := h.registered
			h.mu.Unlock()
			if registered {
				heartbeat()
			}
		}
	}
}

// deregister removes the instance from the server after its check failed,
// with one pass over the servers: if that fails too the server expires it
// after its TTL, since no heartbeat keeps it alive.
func (h *Heartbeater) deregister() {
	h.sendMu.Lock()
	defer h.sendMu.Unlock()
	_, _ = h.c.do(h.ctx, retryOpts{onePass: true, attemptTimeout: h.attemptTimeout()},
		&request{method: "DELETE", path: h.path()}, nil)
	// Its next registration gets a new index.
	h.mu.Lock()
	in := *h.inst
	in.Index = 0
	h.inst = &in
	h.mu.Unlock()
}

// learnIndex learns the index of a registration sent over NATS, whose
// answer carries none, with one HTTP heartbeat.
func (h *Heartbeater) learnIndex() {
	if !h.c.nats.enabled || h.Instance().Index != 0 {
		return
	}
	h.sendMu.Lock()
	defer h.sendMu.Unlock()
	h.mu.Lock()
	in := h.inst
	h.mu.Unlock()
	_ = h.sendHTTP(h.ctx, in, retryOpts{onePass: true, attemptTimeout: h.attemptTimeout()})
}
