package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/discoverd/discoverd/api"
	"github.com/discoverd/discoverd/client"
	"github.com/discoverd/discoverd/internal/testnode"
	"github.com/discoverd/discoverd/internal/version"
)

// startServer starts a real single-node discoverd in process and returns
// its address.
func startServer(t *testing.T) string {
	t.Helper()
	return testnode.Start(t, testnode.Options{TTL: time.Second}).Addr()
}

// syncBuffer is a bytes.Buffer safe for a command writing while the test
// reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// ctl runs discoverctl against addr and returns its exit code and output.
func ctl(t *testing.T, addr string, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr syncBuffer
	code := run(append([]string{"--server", addr}, args...), &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

// ok runs discoverctl and fails the test unless it succeeds.
func ok(t *testing.T, addr string, args ...string) string {
	t.Helper()
	code, out, errOut := ctl(t, addr, args...)
	if code != 0 {
		t.Fatalf("discoverctl %q: exit %d, stderr %q", args, code, errOut)
	}
	if errOut != "" {
		t.Errorf("discoverctl %q: stderr %q", args, errOut)
	}
	return out
}

// fails runs discoverctl, expects exit code want and one stderr line with
// the given text, and returns it.
func fails(t *testing.T, addr string, want int, text string, args ...string) string {
	t.Helper()
	code, out, errOut := ctl(t, addr, args...)
	if code != want {
		t.Fatalf("discoverctl %q: exit %d (stdout %q, stderr %q), want %d", args, code, out, errOut, want)
	}
	first, _, _ := strings.Cut(errOut, "\n")
	if !strings.HasPrefix(first, "discoverctl: ") || !strings.Contains(first, text) {
		t.Fatalf("discoverctl %q: stderr %q, want a line \"discoverctl: ...%s...\"", args, errOut, text)
	}
	if want == 1 && strings.Count(errOut, "\n") != 1 {
		t.Errorf("discoverctl %q: stderr %q is not one line", args, errOut)
	}
	return errOut
}

func fields(s string) [][]string {
	var out [][]string
	for _, line := range strings.Split(strings.TrimRight(s, "\n"), "\n") {
		out = append(out, strings.Fields(line))
	}
	return out
}

func TestCommands(t *testing.T) {
	addr := startServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c := client.New(addr)
	defer c.Close()

	// services
	if got := ok(t, addr, "services"); got != "SERVICE\n" {
		t.Errorf("services with none = %q", got)
	}
	if got := ok(t, addr, "add-service", "web"); !strings.Contains(got, "created service web") {
		t.Errorf("add-service = %q", got)
	}
	ok(t, addr, "add-service", "db", "--leader-type", "manual")
	if got := ok(t, addr, "services"); got != "SERVICE\ndb\nweb\n" {
		t.Errorf("services = %q", got)
	}
	var names []string
	if err := json.Unmarshal([]byte(ok(t, addr, "services", "--json")), &names); err != nil || !reflect.DeepEqual(names, []string{"db", "web"}) {
		t.Errorf("services --json = %q, %v", names, err)
	}
	fails(t, addr, 1, `service "web" already exists`, "add-service", "web")

	// instances and leader
	if got := ok(t, addr, "instances", "web"); got != "ID  ADDR  PROTO  INDEX  META  LEADER\n" {
		t.Errorf("instances with none = %q", got)
	}
	if got := ok(t, addr, "leader", "web"); got != "service web has no leader\n" {
		t.Errorf("leader with none = %q", got)
	}
	if got := ok(t, addr, "leader", "web", "--json"); got != "null\n" {
		t.Errorf("leader --json with none = %q", got)
	}
	h1, err := c.Register(ctx, "web", "10.0.0.1:80", map[string]string{"zone": "a", "v": "1"}, client.InstanceID("web-1"), client.Proto("http"))
	if err != nil {
		t.Fatal(err)
	}
	defer h1.Close()
	h2, err := c.Register(ctx, "web", "10.0.0.2:80", nil, client.InstanceID("web-2"))
	if err != nil {
		t.Fatal(err)
	}
	defer h2.Close()
	i1, i2 := h1.Instance().Index, h2.Instance().Index
	want := [][]string{
		{"ID", "ADDR", "PROTO", "INDEX", "META", "LEADER"},
		{"web-1", "10.0.0.1:80", "http", itoa(i1), "v=1,zone=a", "*"},
		{"web-2", "10.0.0.2:80", "tcp", itoa(i2), "-"},
	}
	if got := fields(ok(t, addr, "instances", "web")); !reflect.DeepEqual(got, want) {
		t.Errorf("instances = %q, want %q", got, want)
	}
	var insts []*api.Instance
	if err := json.Unmarshal([]byte(ok(t, addr, "--json", "instances", "web")), &insts); err != nil ||
		len(insts) != 2 || insts[0].ID != "web-1" || insts[0].Index != i1 || insts[0].Meta["zone"] != "a" {
		t.Errorf("instances --json = %v, %v", insts, err)
	}
	want = [][]string{
		{"ID", "ADDR", "PROTO", "INDEX", "META"},
		{"web-1", "10.0.0.1:80", "http", itoa(i1), "v=1,zone=a"},
	}
	if got := fields(ok(t, addr, "leader", "web")); !reflect.DeepEqual(got, want) {
		t.Errorf("leader = %q, want %q", got, want)
	}
	var leader api.Instance
	if err := json.Unmarshal([]byte(ok(t, addr, "leader", "--json", "web")), &leader); err != nil || leader.ID != "web-1" || leader.Index != i1 {
		t.Errorf("leader --json = %+v, %v", leader, err)
	}

	// Unknown service: a clear error.
	fails(t, addr, 1, `service "nope" does not exist`, "instances", "nope")
	fails(t, addr, 1, `service "nope" does not exist`, "leader", "nope")
	fails(t, addr, 1, `service "nope" does not exist`, "meta", "get", "nope")
	// A watch waits for a service not created yet, as Flynn's components do.
	wn := start(addr, "watch", "nope")
	waitOutput(t, wn, "current")
	if code := wn.stop(t); code != 0 {
		t.Fatalf("watch of a service not created yet exit %d, stderr %q", code, wn.stderr.String())
	}
	fails(t, addr, 1, `service name "No_Pe"`, "instances", "No_Pe")

	// meta
	// Nothing there is an answer (exit 0), like a leader of none above.
	if got := ok(t, addr, "meta", "get", "web"); got != "service web has no meta\n" {
		t.Errorf("meta get with none = %q", got)
	}
	if got := ok(t, addr, "meta", "get", "web", "--json"); got != "null\n" {
		t.Errorf("meta get --json with none = %q", got)
	}
	got := fields(ok(t, addr, "meta", "set", "web", `{"v": 1}`))
	if len(got) != 2 || got[1][1] != `{"v":1}` {
		t.Fatalf("meta set = %q", got)
	}
	idx := got[1][0]
	if got := fields(ok(t, addr, "meta", "get", "web")); !reflect.DeepEqual(got, [][]string{{"INDEX", "DATA"}, {idx, `{"v":1}`}}) {
		t.Errorf("meta get = %q", got)
	}
	// Without --index: over whatever is there.
	ok(t, addr, "meta", "set", "web", `{"v": 2}`)
	var m api.ServiceMeta
	if err := json.Unmarshal([]byte(ok(t, addr, "meta", "get", "web", "--json")), &m); err != nil || compact(m.Data) != `{"v":2}` {
		t.Fatalf("meta get --json = %+v, %v", m, err)
	}
	// With --index: compare-and-set.
	fails(t, addr, 1, "meta index is", "meta", "set", "web", `3`, "--index", idx)
	if err := json.Unmarshal([]byte(ok(t, addr, "meta", "set", "--json", "web", `3`, "--index", itoa(m.Index))), &m); err != nil || string(m.Data) != "3" {
		t.Fatalf("meta set --index --json = %+v, %v", m, err)
	}
	ok(t, addr, "meta", "set", "web", "--", "-4")
	fails(t, addr, 2, "not valid JSON", "meta", "set", "web", "{nope")

	// status
	want = [][]string{
		{"FIELD", "VALUE"},
		{"role", "leader"},
		{"addr", addr},
		{"leader", addr},
	}
	if got := fields(ok(t, addr, "status")); len(got) != 6 || !reflect.DeepEqual(got[:4], want) || got[5][1] != "true" {
		t.Errorf("status = %q", got)
	}
	var st api.Status
	if err := json.Unmarshal([]byte(ok(t, addr, "status", "--json")), &st); err != nil || st.Role != "leader" || !st.Healthy || st.Addr != addr {
		t.Errorf("status --json = %+v, %v", st, err)
	}

	// peers
	if got := fields(ok(t, addr, "peers")); !reflect.DeepEqual(got, [][]string{{"ADDR", "LEADER"}, {addr, "*"}}) {
		t.Errorf("peers = %q", got)
	}
	var peers []api.Peer
	if err := json.Unmarshal([]byte(ok(t, addr, "peers", "--json")), &peers); err != nil || !reflect.DeepEqual(peers, []api.Peer{{Addr: addr, Leader: true}}) {
		t.Errorf("peers --json = %+v, %v", peers, err)
	}

	// remove-service
	ok(t, addr, "remove-service", "db")
	if got := ok(t, addr, "services"); got != "SERVICE\nweb\n" {
		t.Errorf("services after remove = %q", got)
	}
}

func compact(b []byte) string {
	var out bytes.Buffer
	if err := json.Compact(&out, b); err != nil {
		return string(b)
	}
	return out.String()
}

func itoa(n uint64) string {
	b, _ := json.Marshal(n)
	return string(b)
}

func TestUnreachableServer(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()
	start := time.Now()
	fails(t, dead, 1, "cannot reach discoverd at http://"+dead, "--timeout", "300ms", "services")
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("took %v to give up with --timeout 300ms", d)
	}
	fails(t, dead, 1, "cannot reach discoverd", "--timeout", "300ms", "watch", "web")
}

func TestPeersWithoutClusterRoutes(t *testing.T) {
	// A server without the membership routes (a bare HTTP API).
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusNotFound)
		w.Write([]byte(`{"code":"object_not_found","message":"no route for GET /raft/peers","retry":false}`))
	})}
	go srv.Serve(ln)
	defer srv.Close()
	fails(t, ln.Addr().String(), 1, "does not serve the cluster routes", "peers")
}

func TestUsage(t *testing.T) {
	fails(t, "127.0.0.1:1", 2, "no command given")
	fails(t, "127.0.0.1:1", 2, `unknown command "frob"`, "frob")
	fails(t, "127.0.0.1:1", 2, "instances takes 1 argument(s) (SVC), got 0", "instances")
	fails(t, "127.0.0.1:1", 2, "flag provided but not defined: -bogus", "services", "--bogus")
	fails(t, "127.0.0.1:1", 2, "meta needs a subcommand", "meta")
	var out, errOut syncBuffer
	if code := run([]string{"--help"}, &out, &errOut); code != 0 || !strings.Contains(out.String(), "usage: discoverctl") {
		t.Errorf("--help: exit %d, stdout %q", code, out.String())
	}
}

// background runs a long command until its context is canceled.
type background struct {
	cancel         context.CancelFunc
	done           chan int
	stdout, stderr *syncBuffer
}

func start(addr string, args ...string) *background {
	ctx, cancel := context.WithCancel(context.Background())
	b := &background{cancel: cancel, done: make(chan int, 1), stdout: &syncBuffer{}, stderr: &syncBuffer{}}
	go func() { b.done <- runContext(ctx, append([]string{"--server", addr}, args...), b.stdout, b.stderr) }()
	return b
}

// stop interrupts the command and returns its exit code.
func (b *background) stop(t *testing.T) int {
	t.Helper()
	b.cancel()
	select {
	case code := <-b.done:
		return code
	case <-time.After(10 * time.Second):
		t.Fatal("command did not end after the interrupt")
	}
	return -1
}

func waitOutput(t *testing.T, b *background, text string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(b.stdout.String(), text) {
		select {
		case code := <-b.done:
			t.Fatalf("command ended with %d waiting for %q; stdout %q, stderr %q", code, text, b.stdout.String(), b.stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %q in stdout %q (stderr %q)", text, b.stdout.String(), b.stderr.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestRegisterAndWatch(t *testing.T) {
	addr := startServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c := client.New(addr)
	defer c.Close()
	ok(t, addr, "add-service", "web")

	w := start(addr, "watch", "web")
	wj := start(addr, "watch", "web", "--json")
	waitOutput(t, w, "current")
	waitOutput(t, wj, `"current"`)

	r := start(addr, "register", "web", "10.0.0.1:80", "--meta", "zone=a", "--id", "web-1")
	waitOutput(t, r, "registered web-1 in service web at 10.0.0.1:80 (index ")
	insts, err := c.Instances(ctx, "web")
	if err != nil || len(insts) != 1 || insts[0].ID != "web-1" || insts[0].Meta["zone"] != "a" || insts[0].Proto != "tcp" {
		t.Fatalf("instances while registered = %v, %v", insts, err)
	}
	idx := itoa(insts[0].Index)
	waitOutput(t, w, "leader       "+idx)
	if code := r.stop(t); code != 0 {
		t.Fatalf("register exit %d, stderr %q", code, r.stderr.String())
	}
	if !strings.HasSuffix(r.stdout.String(), "deregistered web-1\n") {
		t.Errorf("register stdout = %q", r.stdout.String())
	}
	insts, err = c.Instances(ctx, "web")
	if err != nil || len(insts) != 0 {
		t.Fatalf("instances after register was interrupted = %v, %v", insts, err)
	}
	waitOutput(t, w, "down")
	if code := w.stop(t); code != 0 {
		t.Fatalf("watch exit %d, stderr %q", code, w.stderr.String())
	}
	// The prelude of a service with no leader holds no leader event.
	wantLines := [][]string{
		{"current", "1"},
		{"up", idx, "web-1", "10.0.0.1:80", "tcp", "index=" + idx, "meta=zone=a"},
		{"leader", idx, "web-1", "10.0.0.1:80", "tcp", "index=" + idx, "meta=zone=a"},
		{"down", "", "web-1", "10.0.0.1:80", "tcp", "index=" + idx, "meta=zone=a"},
		{"leader", "", "(none)"},
	}
	got := fields(w.stdout.String())
	if len(got) != len(wantLines) {
		t.Fatalf("watch output = %q", w.stdout.String())
	}
	for i, want := range wantLines {
		if want[1] == "" || i == 0 {
			// Indexes of the prelude and of the later writes vary.
			want = append([]string{want[0], got[i][1]}, want[2:]...)
		}
		if !reflect.DeepEqual(got[i], want) {
			t.Errorf("watch line %d = %q, want %q", i, got[i], want)
		}
	}

	waitOutput(t, wj, `"down"`)
	wj.stop(t)
	var kinds []api.EventKind
	for _, line := range strings.Split(strings.TrimSpace(wj.stdout.String()), "\n") {
		var ev api.Event
		if err := json.Unmarshal([]byte(line), &ev); err != nil {
			t.Fatalf("watch --json line %q: %v", line, err)
		}
		if ev.Service != "web" || ev.Index == 0 {
			t.Errorf("watch --json event %+v", ev)
		}
		kinds = append(kinds, ev.Kind)
	}
	wantKinds := []api.EventKind{api.EventCurrent, api.EventUp, api.EventLeader, api.EventDown, api.EventLeader}
	if !reflect.DeepEqual(kinds, wantKinds) {
		t.Errorf("watch --json kinds = %q, want %q", kinds, wantKinds)
	}

	// register --json and --create.
	rj := start(addr, "register", "--json", "--create", "new", "10.0.0.9:80")
	waitOutput(t, rj, `"index"`)
	var inst api.Instance
	if err := json.Unmarshal([]byte(rj.stdout.String()), &inst); err != nil || inst.Addr != "10.0.0.9:80" || inst.Index == 0 {
		t.Errorf("register --json = %q: %v", rj.stdout.String(), err)
	}
	if code := rj.stop(t); code != 0 {
		t.Fatalf("register --json exit %d, stderr %q", code, rj.stderr.String())
	}
	fails(t, addr, 1, `service "nope" does not exist`, "register", "nope", "10.0.0.1:80")
	fails(t, addr, 1, "not host:port", "register", "web", "nope")
}

func TestVersion(t *testing.T) {
	addr := startServer(t)
	out := ok(t, addr, "--json", "version")
	var v versions
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatalf("version --json: %v in %q", err, out)
	}
	if v.Client != version.Get() {
		t.Errorf("client version %q, want %q", v.Client, version.Get())
	}
	if len(v.Nodes) != 1 || v.Nodes[0].Addr != addr || v.Nodes[0].Role != "leader" || v.Nodes[0].Version != version.Get() {
		t.Errorf("nodes %+v, want one leader at %s running %s", v.Nodes, addr, version.Get())
	}
	table := ok(t, addr, "version")
	if !strings.Contains(table, "discoverctl") || !strings.Contains(table, addr) || !strings.Contains(table, "leader") {
		t.Errorf("version table %q lacks the client or the node", table)
	}
	if out := ok(t, addr, "--version"); !strings.HasPrefix(out, "discoverctl "+version.Get()) {
		t.Errorf("--version printed %q", out)
	}
}

func TestSnapshotSaveInspectRestore(t *testing.T) {
	addr := startServer(t)
	ok(t, addr, "add-service", "web")
	c := client.New(addr)
	defer c.Close()
	hb, err := c.RegisterInstance(context.Background(), "web", &api.Instance{ID: "a", Addr: "10.0.0.1:80", Proto: "http"})
	if err != nil {
		t.Fatal(err)
	}
	defer hb.Close()
	file := t.TempDir() + "/backup.snap"
	if out := ok(t, addr, "snapshot", "save", file); !strings.Contains(out, "1 services, 1 instances") {
		t.Errorf("snapshot save printed %q", out)
	}
	// inspect needs no server: this one is unreachable.
	out := ok(t, "127.0.0.1:1", "snapshot", "inspect", file)
	for _, want := range []string{"web", "instances", "index", "size", "sha256"} {
		if !strings.Contains(out, want) {
			t.Errorf("snapshot inspect output lacks %q:\n%s", want, out)
		}
	}
	ok(t, addr, "remove-service", "web")
	if out := ok(t, addr, "snapshot", "restore", file); !strings.Contains(out, "restored") {
		t.Errorf("snapshot restore printed %q", out)
	}
	if out := ok(t, addr, "instances", "web"); !strings.Contains(out, "10.0.0.1:80") {
		t.Errorf("after the restore, instances web: %q", out)
	}
	damaged := t.TempDir() + "/damaged.snap"
	data, _ := os.ReadFile(file)
	os.WriteFile(damaged, data[:len(data)-5], 0o644)
	fails(t, addr, 1, "not a valid discoverd snapshot", "snapshot", "inspect", damaged)
	fails(t, addr, 1, "not a valid discoverd snapshot", "snapshot", "restore", damaged)
	fails(t, addr, exitUsage, "snapshot needs a subcommand", "snapshot")
}
