package integration

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/discoverd/discoverd/connlimit"
	"github.com/discoverd/discoverd/httpapi"
	"github.com/discoverd/discoverd/node"
	"github.com/rs/zerolog"
)

// Cluster is an in-process discoverd cluster on loopback: voters and proxies,
// each a real node with its own data dir, HTTP/Raft port and NATS ports, in
// the spirit of rqlite's system-test helpers.
type Cluster struct {
	t      testing.TB
	Nodes  []*Node
	Peers  []string
	TTL    time.Duration
	Expiry time.Duration
	// MaxConnsPerClient is each node's --max-conns-per-client; 0 = no limit.
	MaxConnsPerClient int
	mu                sync.Mutex
	// sec, when set, runs every node with TLS and auth (WithSecurity).
	sec *Security

	// noStartWait and nodeConfig: see NoStartWait and WithNodeConfig.
	noStartWait bool
	nodeConfig  func(i int, cfg *node.Config)
	raftTimeout time.Duration
}

// Node is one member of a Cluster.
type Node struct {
	Index int
	// Addr is the node's HTTP and Raft address (fixed across restarts).
	Addr string
	// NATSURL is the node's NATS client URL.
	NATSURL string
	Voter   bool

	c   *Cluster
	cfg node.Config
	n   *node.Node
	srv *http.Server
}

// Option changes a cluster's settings.
type Option func(*Cluster)

// WithRaftTimeout sets the voters' Raft heartbeat and election timeout
// (250ms unless set, so that failover tests run quickly); 0 is the
// product's default. A test that measures nothing about elections and
// loads the machine gives its cluster the product's own timing.
func WithRaftTimeout(d time.Duration) Option {
	return func(c *Cluster) { c.raftTimeout = d }
}

// WithTTL sets the instance TTL and expiry check interval.
func WithTTL(ttl, check time.Duration) Option {
	return func(c *Cluster) { c.TTL, c.Expiry = ttl, check }
}

// NoStartWait makes NewCluster return as soon as every node listens,
// before the voters have elected a leader.
func NoStartWait() Option {
	return func(c *Cluster) { c.noStartWait = true }
}

// WithNodeConfig lets a test change each node's config (i is the node's
// index) before it first starts.
func WithNodeConfig(fn func(i int, cfg *node.Config)) Option {
	return func(c *Cluster) { c.nodeConfig = fn }
}

// WithMaxConnsPerClient limits each client address's HTTP connections and
// streams on every node, as --max-conns-per-client does.
func WithMaxConnsPerClient(n int) Option {
	return func(c *Cluster) { c.MaxConnsPerClient = n }
}

// NewCluster starts voters + proxies nodes and waits for a Raft leader. The
// nodes stop when the test ends.
func NewCluster(t testing.TB, voters, proxies int, opts ...Option) *Cluster {
	t.Helper()
	c := &Cluster{t: t, TTL: time.Second, Expiry: 100 * time.Millisecond, raftTimeout: 250 * time.Millisecond}
	for _, o := range append(slices.Clone(defaultOptions), opts...) {
		o(c)
	}
	t.Cleanup(c.Close)
	// A port found free may be taken by another process before a node binds
	// it, as happens on a machine running many tests at once; the cluster
	// then starts over on other ports.
	for attempt := 1; ; attempt++ {
		err := c.start(t.TempDir(), voters, proxies)
		if err == nil {
			break
		}
		c.Close()
		if attempt == 3 || !strings.Contains(err.Error(), "address already in use") {
			t.Fatal(err)
		}
		t.Logf("starting the cluster again on other ports: %v", err)
	}
	if !c.noStartWait {
		c.WaitForLeader(10 * time.Second)
	}
	return c
}

// start lays the nodes out in dir and starts them together. Only the HTTP
// and Raft port of each is chosen here, because the other nodes must know
// it; the NATS ports are bound by the nodes themselves, announced through
// Raft, and kept for restarts.
func (c *Cluster) start(dir string, voters, proxies int) error {
	total := voters + proxies
	ports := FreePorts(c.t, total)
	c.Nodes, c.Peers = nil, nil
	for i := 0; i < total; i++ {
		nd := &Node{
			c:     c,
			Index: i,
			Addr:  "127.0.0.1:" + strconv.Itoa(ports[i]),
			Voter: i < voters,
		}
		nd.cfg = node.Config{
			DataDir:              filepath.Join(dir, fmt.Sprintf("node%d", i)),
			Addr:                 nd.Addr,
			InstanceTTL:          c.TTL,
			ExpiryCheckInterval:  c.Expiry,
			RaftHeartbeatTimeout: c.raftTimeout,
			NATS:                 true,
			NATSAddr:             "127.0.0.1:0",
			Log:                  testLogger(i),
		}
		if nd.Voter {
			nd.cfg.NATSClusterAddr = "127.0.0.1:0"
			nd.cfg.NATSLeafAddr = "127.0.0.1:0"
			c.Peers = append(c.Peers, nd.Addr)
		}
		c.Nodes = append(c.Nodes, nd)
	}
	for _, nd := range c.Nodes {
		nd.cfg.Peers = c.Peers
		if c.sec != nil {
			c.sec.apply(&nd.cfg)
		}
		if c.nodeConfig != nil {
			c.nodeConfig(nd.Index, &nd.cfg)
		}
	}
	var wg sync.WaitGroup
	errs := make(chan error, total)
	for _, nd := range c.Nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := nd.start(); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	return <-errs
}

func (nd *Node) start() error {
	limits := connlimit.New(connlimit.Config{Max: nd.c.MaxConnsPerClient})
	cfg := nd.cfg
	if cfg.TLS != nil {
		// Counted under the TLS layer, as cmd/discoverd does.
		cfg.CountConn, cfg.NodeConn = limits.Conn, limits.NodeConn
	}
	n, err := node.New(cfg)
	if err != nil {
		return fmt.Errorf("starting node %d (%s): %w", nd.Index, nd.Addr, err)
	}
	opts := httpapi.Options{KeepAlive: time.Second}
	if s := nd.c.sec; s != nil {
		opts.Auth, opts.PeerTLS = s.Auth, nd.cfg.PeerTLS
	}
	local := httpapi.New(n, opts)
	nd.n = n
	// Keep the NATS ports the node bound for its restarts.
	if u := n.NATSURL(); u != "" {
		nd.NATSURL = u
		nd.cfg.NATSAddr = strings.TrimPrefix(u, "nats://")
		if info := n.Info(); nd.Voter {
			nd.cfg.NATSClusterAddr, nd.cfg.NATSLeafAddr = info.NATSCluster, info.NATSLeaf
		}
	}
	nd.srv = httpapi.NewServer(httpapi.ByRole(n.IsProxy, local, httpapi.NewProxy(n.Voters, local, opts)), httpapi.ServerOptions{})
	httpapi.EnableHTTP2(nd.srv)
	if err := n.RegisterMetrics(limits); err != nil {
		n.Close()
		return err
	}
	ln := n.HTTPListener()
	if cfg.TLS != nil {
		limits.WireHandler(nd.srv)
	} else {
		ln = limits.Wire(nd.srv, ln)
	}
	go nd.srv.Serve(ln)
	return nil
}

func (nd *Node) stop() {
	if nd.n == nil {
		return
	}
	nd.n.EndStreams()
	nd.srv.Close()
	nd.n.Close()
	nd.n = nil
}

// URL is the node's HTTP base URL.
func (nd *Node) URL() string {
	if nd.c.sec != nil {
		return "https://" + nd.Addr
	}
	return "http://" + nd.Addr
}

// Node returns the running node (nil while it is killed).
func (nd *Node) Node() *node.Node {
	nd.c.mu.Lock()
	defer nd.c.mu.Unlock()
	return nd.n
}

// Running reports whether the node is up.
func (nd *Node) Running() bool { return nd.Node() != nil }

// Close stops every node.
func (c *Cluster) Close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, nd := range c.Nodes {
		nd.stop()
	}
}

// Kill stops node i: its port and NATS ports close, its data dir stays.
func (c *Cluster) Kill(i int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.Nodes[i].stop()
}

// Restart starts node i again on the same address and data dir.
func (c *Cluster) Restart(i int) {
	c.t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	nd := c.Nodes[i]
	nd.stop()
	// The old listener may linger for a moment after close.
	deadline := time.Now().Add(5 * time.Second)
	for {
		err := nd.start()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Leader returns the running voter that is Raft leader, or nil.
func (c *Cluster) Leader() *Node {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, nd := range c.Nodes {
		if nd.n != nil && nd.n.IsLeader() {
			return nd
		}
	}
	return nil
}

// WaitForLeader waits until a running voter leads and every running node
// knows it, and returns the leader.
func (c *Cluster) WaitForLeader(timeout time.Duration) *Node {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if l := c.Leader(); l != nil && c.allKnow(l.Addr) {
			return l
		}
		time.Sleep(10 * time.Millisecond)
	}
	c.t.Fatalf("no raft leader known to every running node within %v", timeout)
	return nil
}

func (c *Cluster) allKnow(leader string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, nd := range c.Nodes {
		if nd.n != nil && (nd.n.RaftLeader() != leader || !nd.n.Ready()) {
			return false
		}
	}
	return true
}

// Followers returns the running voters that are not leader.
func (c *Cluster) Followers() []*Node {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []*Node
	for _, nd := range c.Nodes {
		if nd.n != nil && nd.Voter && !nd.n.IsLeader() && !nd.n.IsProxy() {
			out = append(out, nd)
		}
	}
	return out
}

// Proxies returns the running proxies.
func (c *Cluster) Proxies() []*Node {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []*Node
	for _, nd := range c.Nodes {
		if nd.n != nil && nd.n.IsProxy() {
			out = append(out, nd)
		}
	}
	return out
}

// WaitFor polls cond every 10ms until it holds or timeout passes.
func WaitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// FreePorts returns n distinct free TCP ports on 127.0.0.1.
func FreePorts(t testing.TB, n int) []int {
	t.Helper()
	var lns []net.Listener
	var out []int
	for i := 0; i < n; i++ {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns = append(lns, ln)
		out = append(out, ln.Addr().(*net.TCPAddr).Port)
	}
	for _, ln := range lns {
		ln.Close()
	}
	return out
}

// testLogger logs a node's lines to stderr when DISCOVERD_TEST_LOG is set
// (for example DISCOVERD_TEST_LOG=debug), and discards them otherwise.
func testLogger(i int) zerolog.Logger {
	level, ok := os.LookupEnv("DISCOVERD_TEST_LOG")
	if !ok {
		return zerolog.Nop()
	}
	l, err := zerolog.ParseLevel(level)
	if err != nil {
		l = zerolog.InfoLevel
	}
	// Milliseconds, because a failure on a busy machine is read from the
	// gaps between lines.
	w := zerolog.ConsoleWriter{Out: os.Stderr, NoColor: true, TimeFormat: "15:04:05.000", FormatTimestamp: func(any) string {
		return time.Now().Format("15:04:05.000")
	}}
	return zerolog.New(w).Level(l).With().Int("node", i).Logger()
}

// WaitForFeeds waits until every running voter's NATS heartbeat feed has
// been connected to every other voter for at least d.
func (c *Cluster) WaitForFeeds(d time.Duration) {
	c.t.Helper()
	WaitFor(c.t, d+10*time.Second, "voters' heartbeat feeds connected", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		for _, nd := range c.Nodes {
			if nd.n == nil || nd.n.IsProxy() {
				continue
			}
			since := nd.n.HeartbeatFeedSince()
			if since.IsZero() || time.Since(since) < d {
				return false
			}
		}
		return true
	})
}
