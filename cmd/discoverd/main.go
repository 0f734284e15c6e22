// Command discoverd is the service-discovery and leader-election daemon.
//
// With no flags it starts a working single-node server on 127.0.0.1:1111
// (HTTP and Raft) with its data in ./discoverd-data. Every flag can also be
// set with an environment variable DISCOVERD_<FLAG> (--addr ← DISCOVERD_ADDR).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/discoverd/discoverd/bus"
	"github.com/discoverd/discoverd/connlimit"
	"github.com/discoverd/discoverd/dnsapi"
	"github.com/discoverd/discoverd/httpapi"
	"github.com/discoverd/discoverd/internal/version"
	"github.com/discoverd/discoverd/node"
	"github.com/mattn/go-isatty"
	"github.com/rs/zerolog"
)

// options are the daemon's flags.
type options struct {
	dataDir             string
	addr                string
	advertise           string
	peers               string
	natsAddr            string
	natsClusterAddr     string
	natsLeafAddr        string
	dnsAddr             string
	authFile            string
	tlsCert             string
	tlsKey              string
	tlsCA               string
	dnsDomain           string
	dnsRecursors        string
	dnsTTL              uint
	maxConnsPerClient   int
	natsMaxConns        int
	natsMaxSubs         int
	natsMaxPayload      int
	instanceTTL         time.Duration
	expiryCheckInterval time.Duration
	logLevel            string
	logFormat           string
	leaderWait          time.Duration
	showVersion         bool
}

// shutdownGrace is how long open requests and streams get to end after
// SIGTERM before their connections are cut; stopping Raft and NATS follows.
const shutdownGrace = 2 * time.Second

// shutdownLimit is when a shutdown still under way stops waiting and the
// process exits (see run).
const shutdownLimit = 3 * time.Second

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "discoverd:", err)
		os.Exit(1)
	}
}

func parseFlags(args []string, stderr io.Writer) (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet("discoverd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.dataDir, "data-dir", "./discoverd-data", "Raft log, stable store and snapshots")
	fs.StringVar(&o.addr, "addr", "127.0.0.1:1111", "HTTP API and Raft transport, one port")
	fs.StringVar(&o.advertise, "advertise", "", "the address other nodes reach this one at (default: the value of --addr)")
	fs.StringVar(&o.peers, "peers", "", "comma list of the voters' advertised addresses; empty = a single-node cluster of this node")
	fs.StringVar(&o.natsAddr, "nats-addr", "127.0.0.1:4222", "embedded NATS client port (off disables NATS)")
	fs.StringVar(&o.natsClusterAddr, "nats-cluster-addr", "", "voters: NATS route port, needed when there is more than one voter")
	fs.StringVar(&o.natsLeafAddr, "nats-leaf-addr", "", "voters: port on which proxies' NATS servers connect as leafnodes")
	fs.IntVar(&o.natsMaxConns, "nats-max-conns", bus.DefaultMaxConns, "most NATS client connections the node takes")
	fs.IntVar(&o.natsMaxSubs, "nats-max-subs", bus.DefaultMaxSubs, "most subscriptions one NATS connection may hold")
	fs.IntVar(&o.natsMaxPayload, "nats-max-payload", bus.DefaultMaxPayload, "largest NATS message in bytes; a client publishing a larger one (such as a heartbeat) is refused and disconnected")
	fs.StringVar(&o.dnsAddr, "dns-addr", "", "DNS server, UDP and TCP (empty: off)")
	fs.StringVar(&o.authFile, "auth-file", "", "JSON file of tokens and roles (empty: no auth); reloaded on SIGHUP")
	fs.StringVar(&o.tlsCert, "tls-cert", "", "PEM certificate of this node: HTTPS on --addr, TLS on NATS (empty: no TLS); reloaded on SIGHUP")
	fs.StringVar(&o.tlsKey, "tls-key", "", "PEM key of --tls-cert")
	fs.StringVar(&o.tlsCA, "tls-ca", "", "PEM CA that every node's certificate comes from (mutual TLS between nodes)")
	fs.StringVar(&o.dnsDomain, "dns-domain", "discoverd.", "DNS zone the DNS server answers for")
	fs.StringVar(&o.dnsRecursors, "dns-recursors", "", "comma list of upstream DNS servers (host:port) for names outside the zone; empty: REFUSED")
	fs.UintVar(&o.dnsTTL, "dns-ttl", 0, "TTL of DNS records, in seconds")
	fs.IntVar(&o.maxConnsPerClient, "max-conns-per-client", connlimit.DefaultMax, "HTTP connections and streams (HTTP/2 streams each count) one client address may hold; past it 429 too_many_connections; 0 = no limit")
	fs.DurationVar(&o.instanceTTL, "instance-ttl", 10*time.Second, "heartbeat TTL")
	fs.DurationVar(&o.expiryCheckInterval, "expiry-check-interval", time.Second, "how often the leader checks TTLs")
	fs.StringVar(&o.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.DurationVar(&o.leaderWait, "leader-wait", 5*time.Second, "how long a request that needs the Raft leader waits for one while none is known (start-up, an election) before it is answered 503")
	fs.BoolVar(&o.showVersion, "version", false, "print the version and exit")
	fs.StringVar(&o.logFormat, "log-format", "", "console or json (default: console on a terminal, json otherwise)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: discoverd [flags]\n\nEvery flag can also be set as DISCOVERD_<FLAG>, e.g. DISCOVERD_ADDR.\n\nFlags:")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q (discoverd takes only flags)", fs.Arg(0))
	}
	// A flag on the command line wins over its environment variable.
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var envErr error
	fs.VisitAll(func(f *flag.Flag) {
		if set[f.Name] || envErr != nil {
			return
		}
		name := "DISCOVERD_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if v, ok := os.LookupEnv(name); ok {
			if err := fs.Set(f.Name, v); err != nil {
				envErr = fmt.Errorf("%s=%q: %v", name, v, err)
			}
		}
	})
	if envErr != nil {
		return nil, envErr
	}
	if o.advertise == "" {
		o.advertise = o.addr
	}
	for _, f := range []struct {
		name string
		v    int
	}{{"nats-max-conns", o.natsMaxConns}, {"nats-max-subs", o.natsMaxSubs}, {"nats-max-payload", o.natsMaxPayload}} {
		if f.v < 1 {
			return nil, fmt.Errorf("--%s %d: want 1 or more", f.name, f.v)
		}
	}
	if o.natsMaxPayload > 64<<20 {
		return nil, fmt.Errorf("--nats-max-payload %d: at most 64 MiB (nats-server's own bound)", o.natsMaxPayload)
	}
	if o.maxConnsPerClient < 0 {
		return nil, fmt.Errorf("--max-conns-per-client %d: want 0 (no limit) or more", o.maxConnsPerClient)
	}
	return o, nil
}

func (o *options) peerList() []string {
	var out []string
	for _, p := range strings.Split(o.peers, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func newLogger(o *options, out *os.File) (zerolog.Logger, error) {
	level, err := zerolog.ParseLevel(o.logLevel)
	if err != nil || o.logLevel == "" {
		return zerolog.Logger{}, fmt.Errorf("--log-level %q: want debug, info, warn or error", o.logLevel)
	}
	var w io.Writer = out
	switch o.logFormat {
	case "":
		if isatty.IsTerminal(out.Fd()) {
			w = zerolog.ConsoleWriter{Out: out, TimeFormat: time.RFC3339}
		}
	case "console":
		w = zerolog.ConsoleWriter{Out: out, TimeFormat: time.RFC3339, NoColor: !isatty.IsTerminal(out.Fd())}
	case "json":
	default:
		return zerolog.Logger{}, fmt.Errorf("--log-format %q: want console or json", o.logFormat)
	}
	return zerolog.New(w).Level(level).With().Timestamp().Logger(), nil
}

// logStarted logs the start line. Durations are written with their unit
// ("10s"), as the flags take them, not as a bare number.
func logStarted(log zerolog.Logger, o *options, addr, advertise, role, natsURL string) {
	log.Info().Str("addr", addr).Str("advertise", advertise).Str("role", role).Str("nats", natsURL).
		Str("version", version.Get()).Str("data_dir", o.dataDir).Stringer("instance_ttl", o.instanceTTL).
		Stringer("expiry_check_interval", o.expiryCheckInterval).Msg("discoverd started")
}

func run(args []string, stdout, stderr io.Writer) error {
	o, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	if o.showVersion {
		fmt.Fprintln(stdout, version.String("discoverd"))
		return nil
	}
	log, err := newLogger(o, os.Stderr)
	if err != nil {
		return err
	}
	dnsOpts, err := o.dnsOptions(log)
	if err != nil {
		return err
	}

	sec, err := setupSecurity(o, log)
	if err != nil {
		return err
	}

	peers := o.peerList()
	natsOn := o.natsAddr != bus.ClientAddrOff
	if !natsOn && len(peers) > 1 {
		// Voters share heartbeats over NATS, so a cluster keeps the server
		// running without a client port.
		natsOn = true
	}
	cfg := node.Config{
		DataDir:             o.dataDir,
		Addr:                o.addr,
		Advertise:           o.advertise,
		Peers:               peers,
		InstanceTTL:         o.instanceTTL,
		ExpiryCheckInterval: o.expiryCheckInterval,
		NATS:                natsOn,
		NATSAddr:            o.natsAddr,
		NATSClusterAddr:     o.natsClusterAddr,
		NATSLeafAddr:        o.natsLeafAddr,
		PeerToken:           sec.peerToken,
		NATSAuth:            sec.natsAuth(),
		LeaderWait:          o.leaderWait,
		NATSMaxConns:        o.natsMaxConns,
		NATSMaxSubs:         o.natsMaxSubs,
		NATSMaxPayload:      o.natsMaxPayload,
		Log:                 log,
	}
	opts := httpapi.Options{Log: log, Auth: sec.auth}
	sec.nodeTLS(&cfg, &opts)
	limits := connlimit.New(connlimit.Config{Max: o.maxConnsPerClient})
	if cfg.TLS != nil {
		// Counted under the TLS layer: see connlimit.Limiter.WireHandler.
		cfg.CountConn, cfg.NodeConn = limits.Conn, limits.NodeConn
	}
	n, err := node.New(cfg)
	if err != nil {
		return err
	}
	sec.watchNATS(n)
	local := httpapi.New(n, opts)
	srv := httpapi.NewServer(httpapi.ByRole(n.IsProxy, local, httpapi.NewProxy(n.Voters, local, opts)), httpapi.ServerOptions{})
	dnsSrv, err := startDNS(o.dnsAddr, dnsOpts, n, dnsapi.PeerAuth{TLS: cfg.PeerTLS, Token: sec.peerToken})
	if err != nil {
		n.Close()
		return err
	}
	httpapi.EnableHTTP2(srv)
	if err := n.RegisterMetrics(limits); err != nil {
		if dnsSrv != nil {
			dnsSrv.Close()
		}
		n.Close()
		return err
	}
	ln := n.HTTPListener()
	if cfg.TLS != nil {
		limits.WireHandler(srv)
	} else {
		ln = limits.Wire(srv, ln)
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	role := "voter"
	if n.IsProxy() {
		role = "proxy"
	}
	logStarted(log, o, n.Addr(), n.Advertise(), role, n.NATSURL())

	stopReload := make(chan struct{})
	defer close(stopReload)
	sec.reloadOnHUP(stopReload)

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	var runErr error
	select {
	case sig := <-sigs:
		log.Info().Str("signal", sig.String()).Msg("shutting down")
	case err := <-n.Fatal():
		// The node met a Raft entry it cannot apply and closed itself.
		runErr = err
	case err := <-serveErr:
		if !errors.Is(err, http.ErrServerClosed) {
			runErr = fmt.Errorf("serving HTTP: %w", err)
		}
	}
	signal.Stop(sigs)

	// Streams first: an open SSE response would otherwise hold Shutdown for
	// its whole timeout. Each stream then writes its final error event; with
	// many thousands open that takes a while, so the process gives them
	// until shutdownGrace and then cuts the connections left, to exit
	// within 5 s of the signal.
	deadline := time.Now().Add(shutdownGrace)
	// A safety net, not the normal path (which takes shutdownGrace and
	// the node's close, ~2.1 s with 100,000 HTTP/2 streams open): past
	// shutdownLimit the process exits as it is. Every acknowledged write
	// is already on disk (Raft syncs its log before an entry commits), so
	// this loses nothing but the rest of the streams' final events.
	hardStop := time.AfterFunc(shutdownLimit, func() {
		log.Warn().Dur("after", shutdownLimit).Msg("shutdown is taking too long: exiting now")
		os.Exit(0)
	})
	defer hardStop.Stop()
	start := time.Now()
	// The streams are ended from a goroutine of their own: waking 100,000
	// of them takes this goroutine's CPU long enough to be preempted, and
	// a preempted goroutine waits behind every one it woke; the shutdown
	// below must instead run on time, woken by its deadline.
	go n.EndStreams()
	if dnsSrv != nil {
		dnsSrv.Close()
	}
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		log.Warn().Err(err).Msg("HTTP shutdown: cutting the connections left")
		// Not waited for: Close closes the connections one by one, and
		// each close waits until the goroutines writing into it have run,
		// which with thousands of streams still ending takes seconds. The
		// process exits once the node is closed, which cuts them all.
		go srv.Close()
	}
	httpDone := time.Now()
	if err := n.Close(); err != nil && runErr == nil {
		runErr = fmt.Errorf("closing node: %w", err)
	}
	// How long each step took, so that an operator can tell what a slow
	// shutdown waited for.
	log.Info().Dur("streams_and_http", httpDone.Sub(start)).Dur("node", time.Since(httpDone)).
		Msg("discoverd stopped")
	return runErr
}
