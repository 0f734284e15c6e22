package main

import (
	"os"
	"testing"
)

// (This file sorts after bench_test.go so that these tests run after
// TestEveryWorkload: its memory workload reads the RSS growth of the test
// process, which heap freed by earlier tests would hide.)

// TestHeartbeatBaselines runs each heartbeat workload with its baseline, as
// a run compares them: every row has a rate, no errors, and the CPU per
// heartbeat of its server process (the test process for the node, the
// child for a baseline).
func TestHeartbeatBaselines(t *testing.T) {
	s := startServer(t)
	want := []string{"heartbeat-http", "heartbeat-http-baseline", "heartbeat-nats", "heartbeat-nats-baseline"}
	results := runJSON(t, s.smallArgs(append([]string{"--json", "--duration", "500ms"}, want...)...))
	if len(results) != len(want) {
		t.Fatalf("%d rows, want %v: %+v", len(results), want, results)
	}
	for i, r := range results {
		t.Logf("%s: %s", r.short(), r.Note)
		if r.Workload != want[i] {
			t.Errorf("row %d is %s, want %s", i, r.Workload, want[i])
			continue
		}
		checkResult(t, r, true)
		if r.CPUPerOp == nil || *r.CPUPerOp <= 0 {
			t.Errorf("%s: cpu_us_per_op %v, want > 0", r.Workload, r.CPUPerOp)
		}
	}
}

// TestReadCPU reads this process's CPU time, which grows as it works.
func TestReadCPU(t *testing.T) {
	pid := os.Getpid()
	before, err := readCPU(pid)
	if err != nil {
		t.Fatal(err)
	}
	x := 0
	for after := before; after == before; after, _ = readCPU(pid) {
		for i := 0; i < 1e6; i++ {
			x += i
		}
	}
	_ = x
}
