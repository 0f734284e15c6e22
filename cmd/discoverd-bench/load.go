package main

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// loadResult is what a run of concurrent operations measured.
type loadResult struct {
	ops, errs int64
	lat       samples
	elapsed   time.Duration
	firstErr  error
}

func (l *loadResult) rate() float64 {
	if l.elapsed <= 0 {
		return 0
	}
	return float64(l.ops) / l.elapsed.Seconds()
}

// load runs conc workers until dur has passed (dur > 0) or count operations
// are done (count > 0), timing each. mk builds worker w's operation, which
// gets the operation's sequence number (unique across workers). A run where
// failures are the majority stops early.
func (b *bench) load(ctx context.Context, phase string, conc int, dur time.Duration, count int64,
	mk func(w int) (op func(seq int64) error, done func())) loadResult {
	var (
		seq, ops, errs atomic.Int64
		stop           atomic.Bool
		mu             sync.Mutex
		firstErr       error
		wg             sync.WaitGroup
	)
	parts := make([]samples, conc)
	ops0 := &ops
	b.progress.set(phase, ops0, count, dur)
	start := time.Now()
	deadline := start.Add(dur)
	for w := 0; w < conc; w++ {
		op, done := mk(w)
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			if done != nil {
				defer done()
			}
			lat := make(samples, 0, 1024)
			for !stop.Load() {
				n := seq.Add(1) - 1
				if count > 0 && n >= count {
					break
				}
				t0 := time.Now()
				if dur > 0 && !t0.Before(deadline) {
					break
				}
				err := op(n)
				d := time.Since(t0)
				if err != nil {
					e := errs.Add(1)
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
					if e >= 1000 && e > ops.Load() {
						stop.Store(true)
					}
					continue
				}
				ops.Add(1)
				lat = append(lat, d)
			}
			parts[w] = lat
		}(w)
	}
	// Cancellation stops the workers at their next operation.
	finished := make(chan struct{})
	go func() {
		select {
		case <-ctx.Done():
			stop.Store(true)
		case <-finished:
		}
	}()
	wg.Wait()
	close(finished)
	res := loadResult{ops: ops.Load(), errs: errs.Load(), elapsed: time.Since(start), firstErr: firstErr, lat: merge(parts)}
	if res.firstErr == nil && ctx.Err() != nil {
		res.firstErr = ctx.Err()
	}
	return res
}

// instanceBody is the JSON of a registration or heartbeat of instance id;
// seq gives it a unique address.
func instanceBody(id string, seq int64) []byte {
	b := make([]byte, 0, 64+len(id))
	return appendInstanceBody(b, id, seq)
}

func appendInstanceBody(b []byte, id string, seq int64) []byte {
	b = append(b, `{"id":"`...)
	b = append(b, id...)
	b = append(b, `","addr":"10.`...)
	b = strconv.AppendInt(b, seq>>16&255, 10)
	b = append(b, '.')
	b = strconv.AppendInt(b, seq>>8&255, 10)
	b = append(b, '.')
	b = strconv.AppendInt(b, seq&255, 10)
	b = append(b, ':')
	b = strconv.AppendInt(b, 1024+seq>>24, 10)
	b = append(b, `","proto":"http"}`...)
	return b
}

func instanceID(prefix string, seq int64) string {
	return prefix + strconv.FormatInt(seq, 10)
}

func instancePath(svc, id string) string { return "/services/" + svc + "/instances/" + id }

// registerOp is an operation that registers (or heartbeats) the instance
// prefix<seq> of svc on worker w's connection.
func (b *bench) registerOp(svc, prefix string) func(w int) (func(int64) error, func()) {
	return b.instanceOp(svc, prefix, 0)
}

// heartbeatOp heartbeats the n instances prefix0..prefix<n-1> of svc in
// turn, as fill registered them.
func (b *bench) heartbeatOp(svc, prefix string, n int64) func(w int) (func(int64) error, func()) {
	return b.instanceOp(svc, prefix, n)
}

// instanceOp PUTs the instance prefix<seq> of svc, or prefix<seq mod
// cycle> when cycle is positive, on worker w's connection.
func (b *bench) instanceOp(svc, prefix string, cycle int64) func(w int) (func(int64) error, func()) {
	return func(w int) (func(int64) error, func()) {
		d := b.newDoer(w)
		var body []byte
		return func(seq int64) error {
			if cycle > 0 {
				seq %= cycle
			}
			id := instanceID(prefix, seq)
			body = appendInstanceBody(body[:0], id, seq)
			r := request{method: http.MethodPut, path: instancePath(svc, id), body: body}
			st, resp, err := d.do(&r)
			if err != nil {
				return err
			}
			if st != http.StatusOK {
				return httpError(st, resp)
			}
			return nil
		}, d.close
	}
}

// fill registers n instances prefix0..prefix<n-1> of svc, not timed for
// the report.
func (b *bench) fill(ctx context.Context, svc, prefix string, n int) (loadResult, error) {
	res := b.load(ctx, "registering "+strconv.Itoa(n)+" instances", min(b.cfg.concurrency, n), 0, int64(n), b.registerOp(svc, prefix))
	if res.ops < int64(n) {
		return res, fmt.Errorf("registered %d of %d instances (%d errors): %v", res.ops, n, res.errs, res.firstErr)
	}
	return res, nil
}

// createService creates a fresh service for workload and returns its name
// and a function that removes it.
func (b *bench) createService(ctx context.Context, workload string) (string, func(), error) {
	svc := serviceName(workload)
	if _, err := b.call(ctx, http.MethodPut, "/services/"+svc, []byte(`{"leader_type":"oldest"}`)); err != nil {
		return "", nil, err
	}
	return svc, func() {
		if b.cfg.keepServices {
			return
		}
		b.progress.set("deleting service", nil, 0, 0)
		// A fresh context: the service is removed even after an interrupt.
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		b.call(ctx, http.MethodDelete, "/services/"+svc, nil)
	}, nil
}

func failed(name string, err error) []Result {
	return []Result{{Workload: name, Error: err.Error()}}
}

// loadRow builds a row from a load run.
func loadRow(name string, l loadResult) Result {
	r := Result{Workload: name, Ops: l.ops, Errors: l.errs, Rate: f64(round1(l.rate()))}
	r.setLatency(l.lat)
	if l.ops == 0 {
		msg := "no operation succeeded"
		if l.firstErr != nil {
			msg += ": " + l.firstErr.Error()
		}
		r.Error = msg
	} else if l.errs > 0 && l.firstErr != nil {
		r.Note = "first error: " + l.firstErr.Error()
	}
	return r
}

func round1(v float64) float64 { return float64(int64(v*10+0.5)) / 10 }
