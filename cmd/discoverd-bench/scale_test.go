package main

import (
	"bytes"
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestExpiryLedgerClassify(t *testing.T) {
	const ttl = 30 * time.Second
	t0 := time.Unix(1_700_000_000, 0)
	cases := []struct {
		name string
		// sends are the times (after t0) heartbeats of instance 0 were sent;
		// none: never registered.
		sends []time.Duration
		id    int
		down  time.Duration // after t0
		want  downVerdict
	}{
		{"down right after a heartbeat", []time.Duration{0}, 0, time.Second, downFalse},
		{"down just under the TTL", []time.Duration{0}, 0, ttl - time.Nanosecond, downFalse},
		{"down at exactly the TTL is allowed", []time.Duration{0}, 0, ttl, downLate},
		{"down long after the last heartbeat", []time.Duration{0}, 0, 2 * ttl, downLate},
		{"the latest heartbeat counts", []time.Duration{0, 25 * time.Second}, 0, 40 * time.Second, downFalse},
		{"late although heartbeated before", []time.Duration{0, 10 * time.Second}, 0, 10*time.Second + ttl, downLate},
		{"never registered", nil, 0, time.Second, downStray},
		{"not one of ours", []time.Duration{0}, -1, time.Second, downStray},
		{"beyond the instances", []time.Duration{0}, 5, time.Second, downStray},
		// A heartbeat sent after the down event was received (the harness
		// raced the event): the send before the event decides.
		{"rightful down raced by a later send", []time.Duration{0, 40 * time.Second}, 0, 35 * time.Second, downLate},
		{"false down raced by a later send", []time.Duration{0, 20 * time.Second}, 0, 19 * time.Second, downFalse},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			l := newExpiryLedger(3, ttl)
			for _, s := range c.sends {
				l.sent(0, t0.Add(s))
			}
			if got := l.classify(c.id, t0.Add(c.down)); got != c.want {
				t.Fatalf("classify = %s, want %s", got, c.want)
			}
			counts := map[downVerdict]int64{downFalse: l.falseExp.Load(), downLate: l.late.Load(), downStray: l.stray.Load()}
			for v, n := range counts {
				want := int64(0)
				if v == c.want {
					want = 1
				}
				if n != want {
					t.Errorf("%s count = %d, want %d", v, n, want)
				}
			}
			if c.want == downFalse && l.firstFalse == "" {
				t.Error("no description of the first false expiry")
			}
		})
	}
}

func TestExpiryLedgerMaxGap(t *testing.T) {
	l := newExpiryLedger(2, time.Minute)
	t0 := time.Unix(1_700_000_000, 0)
	l.sent(0, t0)
	l.sent(1, t0)
	l.sent(0, t0.Add(3*time.Second))
	l.sent(1, t0.Add(7*time.Second))
	l.sent(0, t0.Add(5*time.Second))
	if got := time.Duration(l.maxGap.Load()); got != 7*time.Second {
		t.Fatalf("max gap = %s, want 7s", got)
	}
	if !l.registered(0) || !l.registered(1) {
		t.Fatal("sent instances not registered")
	}
}

func TestScaleIndex(t *testing.T) {
	cases := []struct {
		id   string
		want int
	}{
		{"s-0", 0},
		{"s-999", 999},
		{"s-1000", -1}, // n = 1000
		{"s-", -1},
		{"s--1", -1},
		{"s-01", -1}, // not an id the workload makes
		{"x-1", -1},
		{"s-1a", -1},
	}
	for _, c := range cases {
		if got := scaleIndex(c.id, scalePrefix, 1000); got != c.want {
			t.Errorf("scaleIndex(%q) = %d, want %d", c.id, got, c.want)
		}
	}
}

// inAll lists the workloads "all" runs.
func inAll() []workload {
	var out []workload
	for _, wl := range workloads {
		if !byNameOnly[wl.name] {
			out = append(out, wl)
		}
	}
	return out
}

func TestScaleNotInAll(t *testing.T) {
	_, names, err := parseArgs([]string{"all"}, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if slices.Contains(names, "scale") {
		t.Errorf("all runs scale: %q", names)
	}
	if _, names, err = parseArgs([]string{"scale"}, &bytes.Buffer{}); err != nil || !slices.Equal(names, []string{"scale"}) {
		t.Errorf("scale by name: %q, %v", names, err)
	}
	for _, args := range [][]string{
		{"--pids", "1,x", "scale"},
		{"--pids", "1,2", "scale"}, // one --http server
		{"--scale-instances", "0", "scale"},
		{"--scale-period", "-1s", "scale"},
	} {
		if _, _, err := parseArgs(args, &bytes.Buffer{}); err == nil {
			t.Errorf("%q: no error", args)
		}
	}
}

// TestScaleWorkload keeps instances alive on a server whose TTL is thirty
// heartbeat periods: none may be expired, and every one is heartbeated.
func TestScaleWorkload(t *testing.T) {
	s := startServerTTL(t, 3*time.Second)
	results := runJSON(t, s.smallArgs("--json", "--scale-instances", "300", "--scale-period", "100ms", "--duration", "2s", "scale"))
	if len(results) != 1 {
		t.Fatalf("%d results, want 1", len(results))
	}
	r := results[0]
	t.Log(r.short(), r.Note)
	if r.Error != "" || r.Ops != 300 || r.Errors != 0 || r.Rate == nil || *r.Rate <= 0 {
		t.Fatalf("scale: %+v", r)
	}
	if !strings.HasPrefix(r.Note, "0 false expiries") || !strings.Contains(r.Note, "0 late") {
		t.Errorf("note: %s", r.Note)
	}
}

// TestScaleWorkloadCountsFalseExpiries tells the workload the TTL is 3 s
// while the server's is 500 ms, and heartbeats once a second: the server
// expires instances between heartbeats, well within what the workload
// takes for the TTL, and each of those down events must be counted.
func TestScaleWorkloadCountsFalseExpiries(t *testing.T) {
	s := startServerTTL(t, 500*time.Millisecond)
	// The last --ttl wins over smallArgs' own.
	args := s.smallArgs("--json", "--scale-instances", "50", "--scale-period", "1s", "--duration", "3s", "--ttl", "3s", "scale")
	var stdout, stderr bytes.Buffer
	run(context.Background(), args, &stdout, &stderr)
	var results []Result
	if err := json.Unmarshal(stdout.Bytes(), &results); err != nil || len(results) != 1 {
		t.Fatalf("output %q: %v\n%s", stdout.String(), err, stderr.String())
	}
	r := results[0]
	t.Log(r.Note)
	if r.Errors == 0 || !strings.Contains(r.Note, "(first: instance ") {
		t.Fatalf("no false expiry counted: %+v", r)
	}
	if !strings.Contains(r.Note, " 0 late") {
		t.Errorf("late expiries counted: %s", r.Note)
	}
}
