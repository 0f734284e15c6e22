package main

import (
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"
)

// progress prints a status line on stderr while a workload runs: in place
// on a terminal (every half second), otherwise a line every five seconds.
type progress struct {
	w       io.Writer
	tty     bool
	enabled bool

	mu       sync.Mutex
	name     string
	phase    string
	ops      *atomic.Int64
	target   int64
	dur      time.Duration
	since    time.Time
	lastOps  int64
	lastAt   time.Time
	stopCh   chan struct{}
	done     chan struct{}
	printedN int
}

func newProgress(w io.Writer, enabled bool) *progress {
	return &progress{w: w, tty: isTerminal(w), enabled: enabled}
}

// start begins the status of a workload.
func (p *progress) start(name string) {
	if !p.enabled {
		return
	}
	p.mu.Lock()
	p.name, p.phase, p.ops, p.target, p.dur = name, "starting", nil, 0, 0
	p.since = time.Now()
	p.stopCh, p.done = make(chan struct{}), make(chan struct{})
	p.mu.Unlock()
	go p.loop(p.stopCh, p.done)
}

// set names the current phase of the workload, with an optional counter of
// operations, the count it is heading for and the planned duration.
func (p *progress) set(phase string, ops *atomic.Int64, target int64, dur time.Duration) {
	if !p.enabled {
		return
	}
	p.mu.Lock()
	p.phase, p.ops, p.target, p.dur = phase, ops, target, dur
	p.since = time.Now()
	p.lastOps, p.lastAt = 0, p.since
	p.mu.Unlock()
}

func (p *progress) stop() {
	if !p.enabled || p.stopCh == nil {
		return
	}
	close(p.stopCh)
	<-p.done
	p.stopCh = nil
	if p.tty {
		fmt.Fprint(p.w, "\r\x1b[K")
	}
}

func (p *progress) loop(stop, done chan struct{}) {
	defer close(done)
	every := 5 * time.Second
	if p.tty {
		every = 500 * time.Millisecond
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		p.print()
	}
}

func (p *progress) print() {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := time.Now()
	line := fmt.Sprintf("[%s] %s %.1fs", p.name, p.phase, now.Sub(p.since).Seconds())
	if p.dur > 0 {
		line += fmt.Sprintf("/%s", p.dur)
	}
	if p.ops != nil {
		n := p.ops.Load()
		line += fmt.Sprintf(" %d", n)
		if p.target > 0 {
			line += fmt.Sprintf("/%d", p.target)
		}
		if dt := now.Sub(p.lastAt).Seconds(); dt > 0 {
			line += fmt.Sprintf(" (%.0f/s)", float64(n-p.lastOps)/dt)
		}
		p.lastOps, p.lastAt = n, now
	}
	if p.tty {
		fmt.Fprint(p.w, "\r\x1b[K"+line)
	} else {
		fmt.Fprintln(p.w, line)
	}
}
