package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// The baselines are the ceilings of this machine and this load generator
// for a transport: servers that do the least a heartbeat needs (read it,
// answer it) and nothing of discoverd's. Each runs in a process of its own
// (this program, run again), so that it competes with the load loops for
// the CPU as a server process does, and so that its CPU time can be read
// from /proc like the server's.

// serverBaselineEnv, when set to "http" or "nats", makes this program serve
// that baseline instead of benchmarking: it prints the server's address on
// stdout and serves until its stdin closes.
const serverBaselineEnv = "DISCOVERD_BENCH_SERVER_BASELINE"

// baselineOK is what the baselines answer a heartbeat with: the size and
// shape of discoverd's own answer to one.
var baselineOK = []byte(`{"ok":true}`)

// serveServerBaselineIfAsked is a server baseline process's main; it
// reports false when this process is not one.
func serveServerBaselineIfAsked() bool {
	kind := os.Getenv(serverBaselineEnv)
	if kind == "" {
		return false
	}
	var addr string
	var stop func()
	var err error
	switch kind {
	case "http":
		addr, stop, err = startHTTPBaseline()
	case "nats":
		addr, stop, err = startNATSBaseline()
	default:
		err = fmt.Errorf("unknown baseline %q", kind)
	}
	serveAsChild("baseline "+kind+" server", addr, stop, err)
	return true
}

// serveAsChild ends a baseline child process: it tells the parent the
// server's address on stdout, serves until the parent closes stdin, stops
// the server and exits. A server that did not start exits with its error.
func serveAsChild(what, addr string, stop func(), err error) {
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", what, err)
		os.Exit(1)
	}
	fmt.Println(addr)
	io.Copy(io.Discard, os.Stdin)
	stop()
	os.Exit(0)
}

// startHTTPBaseline is a bare net/http server that reads any request's body
// and answers it with a small JSON, as a heartbeat is answered.
func startHTTPBaseline() (string, func(), error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	bufs := sync.Pool{New: func() any { b := make([]byte, 4096); return &b }}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		buf := bufs.Get().(*[]byte)
		for {
			if _, err := r.Body.Read(*buf); err != nil {
				break
			}
		}
		bufs.Put(buf)
		w.Header().Set("Content-Type", "application/json")
		w.Write(baselineOK)
	})}
	go srv.Serve(ln)
	return "http://" + ln.Addr().String(), func() { srv.Close() }, nil
}

// startNATSBaseline is a bare embedded nats-server with one subscriber on
// an in-process connection (as discoverd's own) to every heartbeat
// subject, which answers the messages that ask for an answer and drops the
// others.
func startNATSBaseline() (string, func(), error) {
	ns, err := natsserver.NewServer(&natsserver.Options{Host: "127.0.0.1", Port: natsserver.RANDOM_PORT, NoLog: true, NoSigs: true})
	if err != nil {
		return "", nil, err
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		ns.Shutdown()
		return "", nil, errors.New("nats-server not ready within 10s")
	}
	nc, err := nats.Connect(ns.ClientURL(), nats.InProcessServer(ns))
	if err != nil {
		ns.Shutdown()
		return "", nil, err
	}
	sub, err := nc.Subscribe(heartbeatSubject("*"), func(m *nats.Msg) {
		if m.Reply != "" {
			nc.Publish(m.Reply, baselineOK)
		}
	})
	if err == nil {
		// The load generator's flow control bounds what is in flight.
		err = sub.SetPendingLimits(-1, -1)
	}
	if err == nil {
		err = nc.Flush()
	}
	if err != nil {
		nc.Close()
		ns.Shutdown()
		return "", nil, err
	}
	return ns.ClientURL(), func() { nc.Close(); ns.Shutdown() }, nil
}

// child is a baseline server running in a process of its own.
type child struct {
	addr string
	pid  int
	stop func()
}

// spawnChild runs this program again with env added, reads the address it
// prints and returns it with the child's pid and a function that ends it.
func spawnChild(env ...string) (*child, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	stop := func() {
		stdin.Close()
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	}
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		stop()
		return nil, fmt.Errorf("the baseline server did not start: %v", err)
	}
	return &child{addr: strings.TrimSpace(line), pid: cmd.Process.Pid, stop: stop}, nil
}

// clockTicks is USER_HZ, the unit of /proc/<pid>/stat's CPU times: 100 on
// every Linux architecture Go supports.
const clockTicks = 100

// readCPU is the user plus system CPU time a process has used so far, from
// /proc/<pid>/stat.
func readCPU(pid int) (time.Duration, error) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may hold spaces; the fields after its
	// closing parenthesis start with field 3 (state).
	i := strings.LastIndexByte(string(data), ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	f := strings.Fields(string(data[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64) // field 14
	stime, err2 := strconv.ParseInt(f[12], 10, 64) // field 15
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/%d/stat: bad utime/stime %q %q", pid, f[11], f[12])
	}
	return time.Duration(utime+stime) * time.Second / clockTicks, nil
}

// cpuMeter measures a process's CPU time over a workload's timed part.
type cpuMeter struct {
	pid   int
	start time.Duration
	ok    bool
}

// startCPU starts measuring pid (nothing when pid is 0 or unreadable).
func startCPU(pid int) *cpuMeter {
	m := &cpuMeter{pid: pid}
	if pid > 0 {
		if t, err := readCPU(pid); err == nil {
			m.start, m.ok = t, true
		}
	}
	return m
}

// perOp sets row's CPU per operation over ops, and says so in its note.
func (m *cpuMeter) perOp(row *Result, ops int64) {
	if !m.ok || ops <= 0 {
		return
	}
	t, err := readCPU(m.pid)
	if err != nil {
		return
	}
	us := round1(float64(t-m.start) / float64(time.Microsecond) / float64(ops))
	row.CPUPerOp = &us
	row.Note += fmt.Sprintf("; server CPU %.1f µs/op (pid %d, %.2f s)", us, m.pid, (t - m.start).Seconds())
}

// serverPID is the process of the server the CPU figures are read from: the
// only server (--pid, or the one listening on its port). With several
// servers the load is spread over them and one process's CPU would not be
// the cost of an operation, so there is none.
func (b *bench) serverPID() int {
	if len(b.servers) != 1 {
		return 0
	}
	// --pid names the --http server, not the secured bench's --https one.
	if b.cfg.pid != 0 && b.tlsConf == nil {
		return b.cfg.pid
	}
	pid, err := findListener(b.servers[0].host)
	if err != nil {
		return 0
	}
	return pid
}

// heartbeat-http-baseline: heartbeat-http's load against a bare net/http
// server that reads each body and answers a small JSON.
func runHeartbeatHTTPBaseline(ctx context.Context, b *bench) []Result {
	const name = "heartbeat-http-baseline"
	c, err := spawnChild(serverBaselineEnv + "=http")
	if err != nil {
		return failed(name, err)
	}
	defer c.stop()
	srv, err := parseServer(c.addr)
	if err != nil {
		return failed(name, err)
	}
	base := *b
	base.servers = []server{srv}
	row := base.heartbeatHTTP(ctx, name, serviceName(name), c.pid)
	row.Note += "; bare net/http server"
	return []Result{row}
}

// heartbeat-nats-baseline: heartbeat-nats's load against a bare embedded
// nats-server with one in-process subscriber.
func runHeartbeatNATSBaseline(ctx context.Context, b *bench) []Result {
	const name = "heartbeat-nats-baseline"
	c, err := spawnChild(serverBaselineEnv + "=nats")
	if err != nil {
		return failed(name, err)
	}
	defer c.stop()
	cfg := *b.cfg
	cfg.nats = []string{c.addr}
	base := *b
	base.cfg = &cfg
	payloads := make([][]byte, b.cfg.instances)
	for i := range payloads {
		payloads[i] = instanceBody(instanceID("i-", int64(i)), int64(i))
	}
	row := base.heartbeatNATS(ctx, name, serviceName(name), payloads, c.pid)
	if row.Error == "" {
		row.Note += "; bare nats-server, one in-process subscriber"
	}
	return []Result{row}
}
