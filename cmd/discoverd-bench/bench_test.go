package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"runtime/pprof"
	"strings"
	"testing"
	"time"

	"github.com/discoverd/discoverd/integration"
	"github.com/discoverd/discoverd/internal/testnode"
)

const (
	testTTL    = 500 * time.Millisecond
	clusterTTL = 2 * time.Second
)

// testServer is an in-process discoverd: a single voter with its HTTP API
// and NATS.
type testServer struct {
	http string
	nats string
	ttl  time.Duration
	// https, ca: a second, secured single node (TLS and tokens) for
	// heartbeat-https.
	https, ca string
}

// withSecure starts the secured node that heartbeat-https runs against.
func (s *testServer) withSecure(t testing.TB) *testServer {
	t.Helper()
	sec := testnode.Start(t, testnode.Options{TTL: time.Minute, Secure: true})
	s.https, s.ca = sec.URL(), sec.CAFile()
	return s
}

func startServer(t testing.TB) *testServer { return startServerTTL(t, testTTL) }

func startServerTTL(t testing.TB, ttl time.Duration) *testServer {
	t.Helper()
	s := testnode.Start(t, testnode.Options{TTL: ttl, NATS: true})
	return &testServer{http: s.URL(), nats: s.NATSURL(), ttl: ttl}
}

// smallArgs runs every workload briefly.
func (s *testServer) smallArgs(extra ...string) []string {
	args := []string{
		"--http", s.http,
		"--instances", "200",
		"--concurrency", "16",
		"--duration", "1s",
		"--samples", "50",
		"--subscribers", "20",
		"--streams-per-addr", "8",
		"--subs-per-conn", "4",
		"--fanout-rounds", "3",
		"--large-instances", "200",
		// The server here is this test process, whose RSS also moves with
		// the garbage the runtime returns to the OS: enough instances that
		// their memory (three copies on a cluster) stands well above that.
		"--memory-instances", "8000",
		"--settle", "100ms",
		"--ttl", s.ttl.String(),
		"--pid", fmt.Sprint(os.Getpid()),
		"--no-progress",
	}
	if s.nats != "" {
		args = append(args, "--nats", s.nats)
	}
	if s.https != "" {
		// A service token may heartbeat only the services it names: the
		// bench creates its own, so it needs an admin token.
		args = append(args, "--https", s.https, "--ca", s.ca, "--token", testnode.AdminSecret)
	}
	return append(args, extra...)
}

func runJSON(t *testing.T, args []string) []Result {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), args, &stdout, &stderr)
	var results []Result
	if err := json.Unmarshal(stdout.Bytes(), &results); err != nil {
		t.Fatalf("exit %d, output is not a JSON array: %v\nstdout:\n%s\nstderr:\n%s", code, err, stdout.String(), stderr.String())
	}
	if code != 0 {
		t.Errorf("exit code %d\nstdout:\n%s\nstderr:\n%s", code, stdout.String(), stderr.String())
	}
	return results
}

func TestEveryWorkload(t *testing.T) {
	s := startServer(t).withSecure(t)
	results := runJSON(t, s.smallArgs("--json", "all"))
	byName := map[string]Result{}
	for _, r := range results {
		byName[r.Workload] = r
	}
	for _, wl := range inAll() {
		r, ok := byName[wl.name]
		if !ok {
			t.Errorf("%s: no result", wl.name)
			continue
		}
		t.Logf("%s", r.short())
		checkResult(t, r, s.nats != "")
	}
	if len(results) != len(inAll()) {
		t.Errorf("%d results for %d workloads", len(results), len(inAll()))
	}
	// Every bench service was removed.
	resp, err := http.Get(s.http + "/services")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var names []string
	if err := json.NewDecoder(resp.Body).Decode(&names); err != nil {
		t.Fatal(err)
	}
	if len(names) != 0 {
		t.Errorf("services left behind: %v", names)
	}
}

var (
	rateWorkloads    = map[string]bool{"heartbeat-http": true, "heartbeat-http-baseline": true, "heartbeat-https": true, "heartbeat-nats": true, "heartbeat-nats-baseline": true, "heartbeat-nats-req": true, "register": true, "register-large": true, "memory": true, "snapshot": true}
	latencyWorkloads = map[string]bool{"heartbeat-http": true, "heartbeat-http-baseline": true, "heartbeat-https": true, "heartbeat-nats-req": true, "register": true, "register-large": true, "snapshot": true,
		"event-latency-sse": true, "event-latency-nats": true, "fanout-sse": true, "fanout-sse-h2": true, "fanout-nats": true, "detect": true}
)

func checkResult(t *testing.T, r Result, haveNATS bool) {
	t.Helper()
	name := r.Workload
	if r.Error != "" {
		t.Errorf("%s failed: %s", name, r.Error)
		return
	}
	if r.Skipped != "" {
		if name == "dns" && r.Skipped == "no --dns address given" {
			return // TestDNSWorkload runs it
		}
		if name == "etcd-register" && r.Skipped == "no --etcd endpoint given" {
			return // it needs an etcd cluster: scripts/bench.sh's etcd phase runs it
		}
		if haveNATS || !strings.Contains(name, "nats") {
			t.Errorf("%s skipped: %s", name, r.Skipped)
		} else if r.Skipped != "no --nats URL given" {
			t.Errorf("%s skipped for %q, want %q", name, r.Skipped, "no --nats URL given")
		}
		return
	}
	if r.Ops <= 0 {
		t.Errorf("%s: ops %d", name, r.Ops)
	}
	if r.Errors != 0 {
		t.Errorf("%s: %d errors (%s)", name, r.Errors, r.Note)
	}
	if rateWorkloads[name] {
		if r.Rate == nil || *r.Rate <= 0 {
			t.Errorf("%s: rate %v, want > 0", name, r.Rate)
		}
	}
	if latencyWorkloads[name] {
		if r.P50 == nil || r.P99 == nil || r.Max == nil || r.Samples == 0 {
			t.Errorf("%s: latencies missing: %+v", name, r)
			return
		}
		if !(*r.P50 <= *r.P99 && *r.P99 <= *r.Max) {
			t.Errorf("%s: p50 %v, p99 %v, max %v out of order", name, *r.P50, *r.P99, *r.Max)
		}
		min := 0.0
		if name == "detect" {
			// Time to down minus the TTL: never negative, and well within a
			// few expiry checks on an idle server.
			min = -1e-9
			if *r.Max > float64(10*time.Second/time.Millisecond) {
				t.Errorf("detect: max %v ms past the TTL", *r.Max)
			}
		}
		if *r.P50 <= min {
			t.Errorf("%s: p50 %v ms", name, *r.P50)
		}
	}
	if name == "memory" {
		if r.BytesPerInstance == nil || *r.BytesPerInstance <= 0 {
			t.Errorf("memory: bytes_per_instance %v, want > 0", r.BytesPerInstance)
		}
	}
}

func TestTableOutput(t *testing.T) {
	s := startServer(t)
	var stdout, stderr bytes.Buffer
	args := append(s.smallArgs("--duration", "200ms"), "register", "fanout-nats")
	if code := run(context.Background(), args, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	out := stdout.String()
	for _, want := range []string{"WORKLOAD", "RATE/s", "P99 ms", "register", "fanout-nats"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
}

func TestArgs(t *testing.T) {
	for _, args := range [][]string{
		{},
		{"nosuch"},
		{"--concurrency", "0", "register"},
		{"--http", "", "register"},
	} {
		if _, _, err := parseArgs(args, &bytes.Buffer{}); err == nil {
			t.Errorf("%q: no error", args)
		}
	}
	_, names, err := parseArgs([]string{"fanout", "memory", "register"}, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := strings.Join(names, " "), "memory register fanout-sse fanout-sse-h2 fanout-nats"; got != want {
		t.Errorf("workloads %q, want %q", got, want)
	}
}

func TestPercentile(t *testing.T) {
	var s samples
	for i := 100; i >= 1; i-- {
		s.add(time.Duration(i) * time.Millisecond)
	}
	sum := s.summarize()
	if sum.p50 != 50*time.Millisecond || sum.p99 != 99*time.Millisecond || sum.max != 100*time.Millisecond || sum.n != 100 {
		t.Errorf("summary %+v", sum)
	}
	one := samples{-3 * time.Millisecond}.summarize()
	if one.p50 != -3*time.Millisecond || one.p99 != one.p50 || one.max != one.p50 {
		t.Errorf("summary of one sample %+v", one)
	}
}

// The raw client handles chunked bodies, Connection: close and reuse.
func TestRawClient(t *testing.T) {
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/chunked":
			w.Write([]byte("hello "))
			w.(http.Flusher).Flush()
			w.Write([]byte("world"))
		case "/close":
			w.Header().Set("Connection", "close")
			w.Write([]byte("bye"))
		case "/error":
			w.WriteHeader(http.StatusConflict)
			w.Write([]byte(`{"code":"object_exists","message":"it exists","retry":false}`))
		default:
			body := new(bytes.Buffer)
			body.ReadFrom(r.Body)
			w.Write(body.Bytes())
		}
	}))
	defer ts.Close()
	c := newRawConn(strings.TrimPrefix(ts.URL, "http://"))
	defer c.close()
	for i := 0; i < 3; i++ {
		for _, tc := range []struct {
			r      request
			status int
			body   string
		}{
			{request{method: "PUT", path: "/echo", body: []byte(`{"a":1}`)}, 200, `{"a":1}`},
			{request{method: "GET", path: "/chunked"}, 200, "hello world"},
			{request{method: "GET", path: "/close"}, 200, "bye"},
			{request{method: "DELETE", path: "/error"}, 409, `{"code":"object_exists","message":"it exists","retry":false}`},
		} {
			st, body, err := c.do(&tc.r)
			if err != nil || st != tc.status || string(body) != tc.body {
				t.Errorf("%s %s: %d %q %v; want %d %q", tc.r.method, tc.r.path, st, body, err, tc.status, tc.body)
			}
		}
	}
	if err := httpError(409, []byte(`{"code":"object_exists","message":"it exists","retry":false}`)); !strings.Contains(err.Error(), "object_exists") {
		t.Errorf("httpError: %v", err)
	}
}

// BenchmarkWorkload runs the workloads named in $BENCH_WORKLOAD (with the
// extra flags in $BENCH_ARGS) against an in-process single voter with NATS
// and a 60 s TTL, so that a CPU or heap profile covers the server:
//
//	BENCH_WORKLOAD=register go test -run '^$' -bench Workload -benchtime 1x \
//	    -cpuprofile /tmp/register.cpu ./cmd/discoverd-bench
//	go tool pprof -tagfocus side=server -top /tmp/register.cpu
//
// Samples carry the pprof label side=server (every goroutine the node and
// its HTTP server start) or side=harness (the load generator).
func BenchmarkWorkload(b *testing.B) {
	spec := os.Getenv("BENCH_WORKLOAD")
	if spec == "" {
		b.Skip("set BENCH_WORKLOAD to the workloads to run (and BENCH_ARGS to extra flags)")
	}
	var s *testServer
	pprof.Do(context.Background(), pprof.Labels("side", "server"), func(context.Context) {
		if os.Getenv("BENCH_VOTERS") == "3" {
			s = startCluster(b, time.Minute)
		} else {
			s = startServerTTL(b, time.Minute)
		}
	})
	args := []string{"--http", s.http, "--nats", s.nats, "--ttl", "1m", "--pid", fmt.Sprint(os.Getpid()), "--json", "--no-progress", "--wait", "20s"}
	args = append(args, strings.Fields(os.Getenv("BENCH_ARGS"))...)
	args = append(args, strings.Fields(spec)...)
	var out bytes.Buffer
	for b.Loop() {
		out.Reset()
		pprof.Do(context.Background(), pprof.Labels("side", "harness"), func(ctx context.Context) {
			if code := run(ctx, args, &out, io.Discard); code != 0 {
				b.Errorf("exit code %d: %s", code, out.String())
			}
		})
	}
	if file := os.Getenv("BENCH_HEAPPROFILE"); file != "" {
		// The heap while the server still holds what the workload left
		// (run with BENCH_ARGS=--keep-services to keep its instances).
		writeHeapProfile(b, file)
	}
	var results []Result
	if err := json.Unmarshal(out.Bytes(), &results); err != nil {
		b.Fatalf("%v: %s", err, out.String())
	}
	for _, r := range results {
		b.Log(r.short())
		if r.Rate != nil {
			b.ReportMetric(*r.Rate, r.Workload+"/s")
		}
		if r.P99 != nil {
			b.ReportMetric(*r.P99, r.Workload+"-p99-ms")
		}
		if r.BytesPerInstance != nil {
			b.ReportMetric(*r.BytesPerInstance, "B/instance")
		}
	}
}

func writeHeapProfile(b *testing.B, file string) {
	runtime.GC()
	f, err := os.Create(file)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	if err := pprof.WriteHeapProfile(f); err != nil {
		b.Fatal(err)
	}
}

// The same against a 3-voter cluster, with the servers listed leader first
// as scripts/bench.sh does: --wait sees the cluster settle, and the
// workloads that write through one server and watch another run across it.
func TestEveryWorkloadOnACluster(t *testing.T) {
	// detect reports the time to down minus the TTL, whatever the TTL; a
	// longer one keeps a busy host's delayed heartbeats of the other
	// workloads from expiring instances and adding Raft writes of their own,
	// and leaves room to register detect's samples within it.
	s := startCluster(t, clusterTTL).withSecure(t)
	// Fewer detect samples: a cluster commits each registration on a
	// quorum's disks, and detect must register them all within the TTL.
	results := runJSON(t, s.smallArgs("--json", "--wait", "20s", "--samples", "20", "all"))
	if len(results) != len(inAll()) {
		t.Errorf("%d results for %d workloads", len(results), len(inAll()))
	}
	for _, r := range results {
		t.Logf("%s", r.short())
		checkResult(t, r, true)
	}
}

// startCluster starts an in-process 3-voter cluster and lists its servers
// leader first, as comma lists.
func startCluster(tb testing.TB, ttl time.Duration) *testServer {
	tb.Helper()
	// The product's Raft timing, not the quick one of the failover tests:
	// nothing here measures elections, and the workloads load every core, so
	// a quarter-second lease would hand leadership around mid-measurement.
	c := integration.NewCluster(tb, 3, 0, integration.WithTTL(ttl, 100*time.Millisecond), integration.WithRaftTimeout(0))
	leader := c.WaitForLeader(10 * time.Second)
	var urls, natsURLs []string
	for _, nd := range append([]*integration.Node{leader}, c.Followers()...) {
		urls = append(urls, nd.URL())
		natsURLs = append(natsURLs, nd.NATSURL)
	}
	return &testServer{http: strings.Join(urls, ","), nats: strings.Join(natsURLs, ","), ttl: ttl}
}
