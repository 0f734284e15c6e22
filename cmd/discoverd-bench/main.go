// Command discoverd-bench drives one or more discoverd servers through their
// public HTTP API and NATS subjects and reports throughput and latency.
//
//	discoverd-bench [--http URL[,URL...]] [--nats URL[,URL...]] [--instances N]
//	                [--concurrency C] [--duration D] [--wait D] [--json] WORKLOAD...
//
// Workloads: heartbeat-http, heartbeat-http-baseline, heartbeat-https (the
// same against --https with --token and --ca), heartbeat-nats,
// heartbeat-nats-baseline, heartbeat-nats-req, register,
// register-large, event-latency (event-latency-sse, event-latency-nats),
// detect, fanout (fanout-sse, fanout-nats), memory, dns (with --dns), all
// (every one but scale) and scale.
//
// It imports only the shared api types, the version, nats.go, nats-server
// (for a baseline), miekg/dns and x/net's HTTP/2 framer (fanout-sse-h2's
// client), never discoverd's server packages,
// so it can be pointed at any server that speaks the API. Every workload
// creates its own service, bench-<workload>-<random>, and deletes it after.
package main

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/discoverd/discoverd/internal/version"
)

// Result is one row of the report (one object of the --json array).
type Result struct {
	Workload string `json:"workload"`
	// Ops is how many operations the rate and latencies are over.
	Ops int64 `json:"ops,omitempty"`
	// Rate is operations per second, where it applies.
	Rate *float64 `json:"rate,omitempty"`
	P50  *float64 `json:"p50_ms,omitempty"`
	P99  *float64 `json:"p99_ms,omitempty"`
	Max  *float64 `json:"max_ms,omitempty"`
	// BytesPerInstance is the server's RSS growth per instance (memory only).
	BytesPerInstance *float64 `json:"bytes_per_instance,omitempty"`
	// BytesPerStream is the server's RSS growth per open stream (fanout-sse
	// and fanout-sse-h2).
	BytesPerStream *float64 `json:"bytes_per_stream,omitempty"`
	// CPUPerOp is the server process's CPU time (user + system) per
	// operation, in microseconds, where the harness could read it.
	CPUPerOp *float64 `json:"cpu_us_per_op,omitempty"`
	// Samples is how many latency samples P50/P99/Max are over.
	Samples int   `json:"samples,omitempty"`
	Errors  int64 `json:"errors"`
	// Skipped says why the workload did not run.
	Skipped string `json:"skipped,omitempty"`
	// Error says why the workload failed.
	Error string `json:"error,omitempty"`
	Note  string `json:"note,omitempty"`
}

type config struct {
	http         []string
	nats         []string
	instances    int
	concurrency  int
	duration     time.Duration
	samples      int
	subscribers  int
	rounds       int
	large        int
	memInstances int
	ttl          time.Duration
	pid          int
	natsConns    int
	// streamsPerAddr and subsPerConn spread fanout's subscribers.
	streamsPerAddr int
	subsPerConn    int
	wait           time.Duration
	settle         time.Duration
	json           bool
	stdClient      bool
	noProgress     bool
	keepServices   bool
	render         string
	// https, token and ca: a secured server set for heartbeat-https.
	https   []string
	token   string
	ca      string
	dnsAddr string
	// etcd: the client URLs of an etcd cluster, for etcd-register.
	etcd        []string
	dnsDomain   string
	showVersion bool
	// scale: instances, heartbeat period, the servers' pids (in --http
	// order) and how to restart a follower.
	scaleInstances int
	scalePeriod    time.Duration
	pids           []int
	restartCmd     string
	restartLog     string
}

// workload is one named benchmark. A workload may produce several rows
// (event-latency gives one per transport).
type workload struct {
	name  string
	about string
	run   func(ctx context.Context, b *bench) []Result
}

// byNameOnly are the workloads left out of "all", run only when named:
// scale sizes itself to the server's TTL and runs for minutes.
var byNameOnly = map[string]bool{"scale": true}

var workloads = []workload{
	// memory runs first in "all": on a server that has already held and freed
	// hundreds of thousands of instances, new ones reuse freed heap and the
	// RSS growth would understate their cost.
	{"memory", "server RSS growth per instance with --memory-instances registered", runMemory},
	{"heartbeat-http", "heartbeats of --instances instances over HTTP by --concurrency connections", runHeartbeatHTTP},
	{"heartbeat-http-baseline", "heartbeat-http's load against a bare net/http server (the ceiling)", runHeartbeatHTTPBaseline},
	{"heartbeat-https", "heartbeat-http against --https with --token: the cost of TLS and auth", runHeartbeatHTTPS},
	{"heartbeat-nats", "heartbeats published over NATS at full rate, rate confirmed by request/reply", runHeartbeatNATS},
	{"heartbeat-nats-baseline", "heartbeat-nats's load against a bare nats-server with one in-process subscriber (the ceiling)", runHeartbeatNATSBaseline},
	{"heartbeat-nats-req", "heartbeats over NATS request/reply by --concurrency requesters", runHeartbeatNATSReq},
	{"register", "new instances through Raft with --concurrency writers", runRegister},
	{"register-large", "register into a service already holding --large-instances", runRegisterLarge},
	{"snapshot", "heartbeats and registrations with --large-instances held, alone and while backups (GET /raft/snapshot) are taken", runSnapshot},
	{"event-latency-sse", "registration request sent -> its up event over SSE", runEventLatencySSE},
	{"event-latency-nats", "registration request sent -> its up event over NATS", runEventLatencyNATS},
	{"fanout-sse", "leader change seen by --subscribers SSE streams over HTTP/1.1", runFanoutSSE},
	{"fanout-sse-h2", "leader change seen by --subscribers SSE streams over h2c (HTTP/2)", runFanoutSSEH2},
	{"fanout-nats", "leader change seen by --subscribers NATS subscribers", runFanoutNATS},
	{"detect", "last heartbeat -> down event, minus --ttl", runDetect},
	{"etcd-register", "a lease grant + put per registration against the --etcd endpoints (etcd's JSON gateway), as register does against discoverd", runEtcdRegister},
	{"scale", "--scale-instances in one service, registered then kept alive over NATS for --duration, a follower restarted half way; false expiries are errors (not in all)", runScale},
	{"dns", "DNS queries/s over UDP (A and SRV of 100 instances, a leader name) against --dns and a plain miekg/dns server", runDNS},
}

// aliases name groups of workloads.
var aliases = map[string][]string{
	"event-latency": {"event-latency-sse", "event-latency-nats"},
	"fanout":        {"fanout-sse", "fanout-sse-h2", "fanout-nats"},
	"nats":          {"heartbeat-nats", "heartbeat-nats-req"},
}

func main() {
	serveBaselineIfAsked()
	serveServerBaselineIfAsked()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

func usage(fs *flag.FlagSet, w io.Writer) func() {
	return func() {
		fmt.Fprintln(w, "usage: discoverd-bench [flags] WORKLOAD...\n\nWorkloads (or all):")
		for _, wl := range workloads {
			fmt.Fprintf(w, "  %-20s %s\n", wl.name, wl.about)
		}
		for _, name := range []string{"event-latency", "fanout", "nats"} {
			fmt.Fprintf(w, "  %-20s %s\n", name, strings.Join(aliases[name], " + "))
		}
		fmt.Fprintln(w, "\nFlags:")
		fs.PrintDefaults()
	}
}

func parseArgs(args []string, stderr io.Writer) (*config, []string, error) {
	cfg := &config{}
	fs := flag.NewFlagSet("discoverd-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var httpList, natsList string
	fs.StringVar(&httpList, "http", "http://127.0.0.1:1111", "comma list of server HTTP URLs; load is spread across them")
	fs.StringVar(&natsList, "nats", "", "comma list of server NATS URLs (nats://host:port); the NATS workloads are skipped without one")
	fs.IntVar(&cfg.instances, "instances", 10000, "instances heartbeated by heartbeat-http and heartbeat-nats")
	fs.IntVar(&cfg.concurrency, "concurrency", 256, "concurrent connections (HTTP) or requesters (NATS request/reply)")
	fs.DurationVar(&cfg.duration, "duration", 10*time.Second, "how long each timed workload runs")
	fs.IntVar(&cfg.samples, "samples", 1000, "samples of event-latency and detect")
	fs.IntVar(&cfg.subscribers, "subscribers", 1000, "SSE streams and NATS subscribers of fanout (each)")
	fs.IntVar(&cfg.streamsPerAddr, "streams-per-addr", 1000, "fanout: SSE streams per loopback source address (127.0.0.2, ...), under the server's --max-conns-per-client")
	fs.IntVar(&cfg.subsPerConn, "subs-per-conn", 100, "fanout-nats: subscribers per NATS connection")
	fs.IntVar(&cfg.rounds, "fanout-rounds", 5, "leader changes measured by fanout")
	fs.IntVar(&cfg.large, "large-instances", 100000, "instances already in the service before register-large measures")
	fs.IntVar(&cfg.memInstances, "memory-instances", 100000, "instances registered by memory")
	fs.DurationVar(&cfg.ttl, "ttl", 10*time.Second, "the server's --instance-ttl (detect reports time to down minus this)")
	fs.IntVar(&cfg.pid, "pid", 0, "server process id for memory (default: the process listening on the first --http port)")
	fs.IntVar(&cfg.natsConns, "nats-conns", 2, "NATS connections used to publish and request")
	fs.DurationVar(&cfg.wait, "wait", 0, "before each workload, wait up to this long until every server is healthy, agrees on the Raft leader and their NATS routes carry messages (for servers just started, or that a workload cost their leader)")
	fs.DurationVar(&cfg.settle, "settle", 2*time.Second, "memory: wait this long after registering before reading RSS")
	fs.BoolVar(&cfg.json, "json", false, "print one JSON array instead of a table")
	fs.BoolVar(&cfg.stdClient, "std-client", false, "use net/http for the load loops instead of the lean keep-alive client")
	fs.BoolVar(&cfg.noProgress, "no-progress", false, "no progress line on stderr")
	fs.BoolVar(&cfg.keepServices, "keep-services", false, "do not delete the bench services afterwards")
	var httpsList string
	fs.StringVar(&httpsList, "https", "", "comma list of HTTPS URLs of a server with TLS and auth, for heartbeat-https (compared with heartbeat-http in the same run)")
	fs.StringVar(&cfg.token, "token", "", "bearer token for the --https servers")
	fs.StringVar(&cfg.ca, "ca", "", "PEM CA of the --https servers")
	fs.StringVar(&cfg.dnsAddr, "dns", "", "the server's DNS address (host:port, its --dns-addr); the dns workload is skipped without one")
	var etcdList string
	fs.StringVar(&etcdList, "etcd", "", "comma list of etcd client URLs (http://host:port) for etcd-register")
	fs.StringVar(&cfg.dnsDomain, "dns-domain", "discoverd.", "the server's --dns-domain")
	fs.IntVar(&cfg.scaleInstances, "scale-instances", 20000, "instances registered and kept alive by scale")
	fs.DurationVar(&cfg.scalePeriod, "scale-period", 0, "scale: time between two heartbeats of one instance (default --ttl/3)")
	var pidList string
	fs.StringVar(&pidList, "pids", "", "scale: comma list of the --http servers' process ids, in the same order (default: the processes listening on their ports); with no --restart-cmd, scale restarts a follower by relaunching its command line")
	fs.StringVar(&cfg.restartCmd, "restart-cmd", "", "scale: shell command that restarts a follower, run with DISCOVERD_RESTART_URL, _ADDR, _INDEX (in --http) and _PID set; it returns once the old process has exited and may print the new pid last")
	fs.StringVar(&cfg.restartLog, "restart-log", "", "scale: file for the output of a follower relaunched from --pids (default: one in the temp dir)")
	fs.BoolVar(&cfg.showVersion, "version", false, "print the version and exit")
	fs.StringVar(&cfg.render, "render", "", "print the table of a --json output `file` and exit (no workloads run)")
	fs.Usage = usage(fs, stderr)
	if err := fs.Parse(args); err != nil {
		return nil, nil, err
	}
	if cfg.render != "" || cfg.showVersion {
		return cfg, nil, nil
	}
	cfg.http = splitList(httpList)
	cfg.https = splitList(httpsList)
	cfg.nats = splitList(natsList)
	cfg.etcd = splitList(etcdList)
	for _, p := range splitList(pidList) {
		pid, err := strconv.Atoi(p)
		if err != nil || pid <= 0 {
			return nil, nil, fmt.Errorf("--pids: %q is not a process id", p)
		}
		cfg.pids = append(cfg.pids, pid)
	}
	if len(cfg.pids) > 0 && len(cfg.pids) != len(cfg.http) {
		return nil, nil, fmt.Errorf("--pids lists %d processes for %d --http servers", len(cfg.pids), len(cfg.http))
	}
	if cfg.scalePeriod < 0 {
		return nil, nil, errors.New("--scale-period must not be negative")
	}
	if len(cfg.http) == 0 {
		return nil, nil, errors.New("--http: at least one server URL is needed")
	}
	for _, v := range []struct {
		name string
		n    int
	}{{"--instances", cfg.instances}, {"--concurrency", cfg.concurrency}, {"--samples", cfg.samples},
		{"--subscribers", cfg.subscribers}, {"--fanout-rounds", cfg.rounds}, {"--large-instances", cfg.large},
		{"--memory-instances", cfg.memInstances}, {"--nats-conns", cfg.natsConns},
		{"--streams-per-addr", cfg.streamsPerAddr}, {"--subs-per-conn", cfg.subsPerConn},
		{"--scale-instances", cfg.scaleInstances}} {
		if v.n < 1 {
			return nil, nil, fmt.Errorf("%s must be at least 1", v.name)
		}
	}
	if cfg.wait < 0 {
		return nil, nil, errors.New("--wait must not be negative")
	}
	if cfg.duration <= 0 || cfg.ttl <= 0 {
		return nil, nil, errors.New("--duration and --ttl must be positive")
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return nil, nil, errors.New("no workload named (try all)")
	}
	var names []string
	seen := map[string]bool{}
	addName := func(n string) {
		if !seen[n] {
			seen[n] = true
			names = append(names, n)
		}
	}
	for _, arg := range fs.Args() {
		switch {
		case arg == "all":
			for _, wl := range workloads {
				if !byNameOnly[wl.name] {
					addName(wl.name)
				}
			}
		case aliases[arg] != nil:
			for _, n := range aliases[arg] {
				addName(n)
			}
		case findWorkload(arg) != nil:
			addName(arg)
		default:
			return nil, nil, fmt.Errorf("unknown workload %q (see -h)", arg)
		}
	}
	// Run in the canonical order whatever the order given (memory first).
	var ordered []string
	for _, wl := range workloads {
		if seen[wl.name] {
			ordered = append(ordered, wl.name)
		}
	}
	return cfg, ordered, nil
}

func findWorkload(name string) *workload {
	for i := range workloads {
		if workloads[i].name == name {
			return &workloads[i]
		}
	}
	return nil
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// run is the whole command; it returns the exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cfg, names, err := parseArgs(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "discoverd-bench:", err)
		return 2
	}
	if cfg.showVersion {
		fmt.Fprintln(stdout, version.String("discoverd-bench"))
		return 0
	}
	if cfg.render != "" {
		return render(cfg.render, stdout, stderr)
	}
	b, err := newBench(cfg, stderr)
	if err != nil {
		fmt.Fprintln(stderr, "discoverd-bench:", err)
		return 2
	}
	defer b.close()
	switch {
	case allStandalone(names):
		// No discoverd server to wait for.
	case cfg.wait > 0:
		b.progress.start("ready")
		err = b.awaitReady(ctx)
		b.progress.stop()
	default:
		err = b.ping(ctx)
	}
	if err != nil {
		fmt.Fprintln(stderr, "discoverd-bench:", err)
		return 1
	}
	var results []Result
	for i, name := range names {
		if ctx.Err() != nil {
			break
		}
		wl := findWorkload(name)
		var rows []Result
		if i > 0 && cfg.wait > 0 && !standaloneWorkloads[name] {
			// A workload that loaded the servers hard may have cost them
			// their Raft leader for a while (on a busy host, an election);
			// the next one starts on a settled cluster, as the first did.
			b.progress.start("ready")
			if err := b.awaitReady(ctx); err != nil {
				rows = failed(name, err)
			}
			b.progress.stop()
		}
		if rows == nil {
			b.progress.start(name)
			rows = wl.run(ctx, b)
			b.progress.stop()
		}
		for _, r := range rows {
			if !cfg.json {
				// Rows are printed as they finish too, so a long run shows them.
				fmt.Fprintln(stderr, "  done:", r.short())
			}
		}
		results = append(results, rows...)
	}
	if cfg.json {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if results == nil {
			results = []Result{}
		}
		if err := enc.Encode(results); err != nil {
			fmt.Fprintln(stderr, "discoverd-bench:", err)
			return 1
		}
	} else {
		printTable(stdout, results)
	}
	code := 0
	for _, r := range results {
		if r.Error != "" {
			code = 1
		}
	}
	if ctx.Err() != nil {
		code = 130
	}
	return code
}

// render prints the table of a file written by --json.
func render(file string, stdout, stderr io.Writer) int {
	data, err := os.ReadFile(file)
	if err != nil {
		fmt.Fprintln(stderr, "discoverd-bench:", err)
		return 1
	}
	var results []Result
	if err := json.Unmarshal(data, &results); err != nil {
		fmt.Fprintf(stderr, "discoverd-bench: %s: %v\n", file, err)
		return 1
	}
	printTable(stdout, results)
	return 0
}

func (r Result) short() string {
	switch {
	case r.Skipped != "":
		return r.Workload + " skipped: " + r.Skipped
	case r.Error != "":
		return r.Workload + " failed: " + r.Error
	}
	var sb strings.Builder
	sb.WriteString(r.Workload)
	if r.Rate != nil {
		fmt.Fprintf(&sb, " %.0f/s", *r.Rate)
	}
	if r.P50 != nil {
		fmt.Fprintf(&sb, " p50 %.3fms p99 %.3fms max %.3fms", *r.P50, *r.P99, *r.Max)
	}
	if r.BytesPerInstance != nil {
		fmt.Fprintf(&sb, " %.0f B/instance", *r.BytesPerInstance)
	}
	if r.BytesPerStream != nil {
		fmt.Fprintf(&sb, " %.0f B/stream", *r.BytesPerStream)
	}
	return sb.String()
}

func printTable(w io.Writer, results []Result) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "WORKLOAD            \tOPS\tRATE/s\tP50 ms\tP99 ms\tMAX ms\tB/INSTANCE\tERRORS\t\t")
	num := func(v *float64, prec int) string {
		if v == nil {
			return "-"
		}
		return fmt.Sprintf("%.*f", prec, *v)
	}
	for _, r := range results {
		note := r.Note
		if r.BytesPerStream != nil {
			note = fmt.Sprintf("server RSS %.0f B/stream; %s", *r.BytesPerStream, note)
		}
		switch {
		case r.Skipped != "":
			note = "skipped: " + r.Skipped
		case r.Error != "":
			note = "FAILED: " + r.Error
		}
		ops := "-"
		if r.Ops > 0 {
			ops = fmt.Sprint(r.Ops)
		}
		fmt.Fprintf(tw, "%-20s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t\t%s\n", r.Workload, ops, num(r.Rate, 0),
			num(r.P50, 3), num(r.P99, 3), num(r.Max, 3), num(r.BytesPerInstance, 0), r.Errors, note)
	}
	tw.Flush()
}

// bench holds what the workloads share.
type bench struct {
	cfg      *config
	servers  []server
	client   *http.Client // setup, teardown and SSE
	progress *progress
	// token and tlsConf are sent to servers (the secured bench only).
	token   string
	tlsConf *tls.Config
	// secure is the bench of the --https servers, nil without them.
	secure *bench
}

func newBench(cfg *config, stderr io.Writer) (*bench, error) {
	b := &bench{cfg: cfg}
	for _, s := range cfg.http {
		srv, err := parseServer(s)
		if err != nil {
			return nil, err
		}
		b.servers = append(b.servers, srv)
	}
	tr := &http.Transport{
		Proxy:               nil,
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        0,
		MaxIdleConnsPerHost: cfg.concurrency,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
		ForceAttemptHTTP2:   false,
	}
	b.client = &http.Client{Transport: tr}
	b.progress = newProgress(stderr, !cfg.noProgress)
	if len(cfg.https) > 0 {
		sb := &bench{cfg: cfg, progress: b.progress, token: cfg.token}
		for _, s := range cfg.https {
			srv, err := parseServer(s)
			if err != nil {
				return nil, err
			}
			sb.servers = append(sb.servers, srv)
		}
		sb.tlsConf = &tls.Config{MinVersion: tls.VersionTLS12}
		if cfg.ca != "" {
			pem, err := os.ReadFile(cfg.ca)
			if err != nil {
				return nil, fmt.Errorf("--ca: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("--ca %s holds no PEM certificate", cfg.ca)
			}
			sb.tlsConf.RootCAs = pool
		}
		str := tr.Clone()
		str.TLSClientConfig = sb.tlsConf
		sb.client = &http.Client{Transport: str}
		b.secure = sb
	}
	return b, nil
}

func (b *bench) close() {
	b.client.CloseIdleConnections()
	if b.secure != nil {
		b.secure.close()
	}
}

func (b *bench) ping(ctx context.Context) error {
	for _, s := range b.servers {
		ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.base+"/ping", nil)
		resp, err := b.client.Do(req)
		cancel()
		if err != nil {
			return fmt.Errorf("server %s does not answer: %v", s.base, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("server %s: GET /ping answered %s", s.base, resp.Status)
		}
	}
	return nil
}

// serviceName is a fresh service name for a workload.
func serviceName(workload string) string {
	var r [4]byte
	rand.Read(r[:])
	name := "bench-" + workload + "-" + hex.EncodeToString(r[:])
	if len(name) > 63 {
		name = name[len(name)-63:]
	}
	return name
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
