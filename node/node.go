package node

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/discoverd/discoverd/api"
	"github.com/discoverd/discoverd/bus"
	"github.com/discoverd/discoverd/fsm"
	"github.com/discoverd/discoverd/internal/dirlock"
	"github.com/discoverd/discoverd/internal/version"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
)

// Config configures a node.
type Config struct {
	// DataDir holds the Raft log, stable store and snapshots.
	DataDir string
	// Addr is the host:port the node listens on for HTTP and Raft together.
	// Port 0 picks a free port.
	Addr string
	// Advertise is the address other nodes reach this one at; empty means the
	// bound listen address.
	Advertise string
	// Peers are the voters' advertised addresses. Empty makes this node a
	// single-voter cluster of its own; a node not in a non-empty list is a
	// proxy.
	Peers []string
	// InstanceTTL is how long an instance lives without a heartbeat.
	InstanceTTL time.Duration
	// ExpiryCheckInterval is how often the leader looks for expired instances.
	ExpiryCheckInterval time.Duration
	// RaftHeartbeatTimeout sets the Raft heartbeat and election timeouts; zero
	// picks 100ms for a single voter and 500ms for a cluster.
	RaftHeartbeatTimeout time.Duration
	// RaftCommitTimeout is Raft's CommitTimeout: how long the leader waits
	// without new entries before it tells followers the commit index
	// anyway. Followers normally learn it at once from the commit nudge, so
	// this is a fallback, and each expiry of it sends every follower an
	// AppendEntries even when nothing happens: zero means 250ms, which
	// keeps an idle cluster's leader under 2 % of a core. Tests set it
	// very long to show that the nudge alone carries the commit index.
	RaftCommitTimeout time.Duration

	// LeaderWait is how long a request that needs the Raft leader waits for
	// one while none is known (start-up, an election) before it fails with
	// service_unavailable. Zero means 5s; negative means not at all.
	LeaderWait time.Duration

	// MaxCommandType is the newest Raft command type this node claims to
	// apply; zero means fsm.MaxCommandType, and so does anything above it.
	// A lower one makes the node stand in for an older release: it
	// announces that type, and stops at any entry of a newer one as that
	// release would (see the upgrade tests). The environment variable
	// DISCOVERD_CLAIM_MAX_COMMAND_TYPE sets it in a built binary; it is
	// deliberately not a flag, being for tests of rolling upgrades only.
	MaxCommandType fsm.CommandType

	// NATS enables the embedded NATS server. With it off, the node has no
	// NATS transport and, in a cluster, no heartbeat feed between voters.
	NATS bool
	// NATSAddr is the NATS client port (host:port, port 0 or -1 for a free
	// one); bus.ClientAddrOff runs the server for the cluster only.
	NATSAddr string
	// NATSClusterAddr is a voter's NATS route port.
	NATSClusterAddr string
	// NATSLeafAddr is a voter's port for proxies' NATS leafnodes.
	NATSLeafAddr string
	// NATSMaxConns, NATSMaxSubs and NATSMaxPayload are the NATS server's
	// client limits (see bus.ServerConfig); 0 picks bus's defaults.
	NATSMaxConns   int
	NATSMaxSubs    int
	NATSMaxPayload int
	// NATSAuth, when set, turns NATS auth on (tokens as NATS users).
	NATSAuth *bus.ServerAuth
	// NATSTLS, when set, puts TLS on the NATS client port and mutual TLS on
	// routes and leafnodes.
	NATSTLS *bus.ServerTLS

	// PeerTLS, when set, is the TLS client side of mutual TLS between
	// nodes (this node's certificate and the cluster's CA): writes forwarded
	// to the leader and membership calls go over HTTPS with it, and Raft
	// connections are dialed with it.
	PeerTLS *tls.Config
	// TLS, when set, makes Addr TLS only (HTTPS, and Raft over mutual TLS
	// told apart by ALPN). Its NextProtos must offer RaftALPN, and it must
	// verify client certificates against the CA when given.
	TLS *tls.Config
	// CountConn, when set with TLS, wraps each connection the port accepts
	// before its TLS handshake (a per-client connection limiter counts it
	// there: net/http must be handed the *tls.Conn itself), and NodeConn is
	// told of each wrapped connection that turns out to be another node's
	// Raft connection, which does not count.
	CountConn func(net.Conn) net.Conn
	NodeConn  func(net.Conn)
	// PeerToken, when set, gives the bearer secret this node presents to
	// the others, for a cluster with auth and no TLS (loopback only).
	PeerToken func() string

	Log zerolog.Logger
}

func (c *Config) setDefaults() {
	if c.DataDir == "" {
		c.DataDir = "./discoverd-data"
	}
	if c.Addr == "" {
		c.Addr = "127.0.0.1:1111"
	}
	if c.InstanceTTL <= 0 {
		c.InstanceTTL = 10 * time.Second
	}
	if c.MaxCommandType == 0 {
		if v, err := strconv.ParseUint(os.Getenv(claimMaxCommandTypeEnv), 10, 8); err == nil {
			c.MaxCommandType = fsm.CommandType(v)
		}
	}
	if c.MaxCommandType == 0 || c.MaxCommandType > fsm.MaxCommandType {
		c.MaxCommandType = fsm.MaxCommandType
	}
	if c.LeaderWait == 0 {
		c.LeaderWait = 5 * time.Second
	}
	if c.ExpiryCheckInterval <= 0 {
		c.ExpiryCheckInterval = time.Second
	}
	if c.RaftCommitTimeout <= 0 {
		c.RaftCommitTimeout = 250 * time.Millisecond
	}
	if c.RaftHeartbeatTimeout <= 0 {
		if len(c.Peers) > 1 {
			c.RaftHeartbeatTimeout = 500 * time.Millisecond
		} else {
			c.RaftHeartbeatTimeout = 100 * time.Millisecond
		}
	}
}

// Node is one discoverd process. As a voter it runs Raft over the registry,
// keeps the heartbeat table, expires instances while it leads and fans
// applied events out. As a proxy it keeps no Raft state and tracks the voters
// it forwards to. Either way it runs the embedded NATS server.
type Node struct {
	cfg       Config
	log       zerolog.Logger
	advertise string

	mux *portMux
	// v is the voter's Raft machinery; nil while the node is a proxy.
	v atomic.Pointer[voter]
	// roleMu serializes promote and demote.
	roleMu sync.Mutex

	hub        *hub
	heartbeats *heartbeatTable
	fwd        *forwarder
	// raftTLS dials other voters' Raft over mutual TLS, nil without TLS.
	raftTLS *tls.Config

	nats      *bus.Server
	nc        *nats.Conn
	publisher *bus.EventPublisher
	hbSubMu   sync.Mutex
	hbSub     *bus.HeartbeatSubscriber
	// multiVoter is set while the cluster has more than one voter, so
	// heartbeats heard over HTTP are shared with the others over NATS.
	multiVoter atomic.Bool
	// feedSince is when this voter's NATS server last got routes to every
	// other voter (Unix nanos), 0 while it lacks some: a heartbeat table fed
	// for less than a TTL cannot be trusted to expire anything.
	feedSince atomic.Int64
	// feedConfirmed is the Raft term and feed in which a heartbeat relayed
	// over NATS was answered by the leader (see relayHeartbeat).
	feedConfirmed atomic.Pointer[feedConfirmation]
	// natsLinks is the number of routes and leafnodes the upkeep last saw.
	natsLinks int

	metrics *prometheus.Registry
	// expired counts the instances this node expired while leading, over
	// every term and role change, for metrics.
	expired atomic.Uint64

	// voters is the proxy's view of the voters, leader first.
	votersMu    sync.Mutex
	voters      []string
	proxyLeader string

	// commandMax is the newest command type every voter applies, as the
	// node table says (see upgrade.go).
	commandMax atomic.Uint32
	// fatal carries the error that stopped the node from within (a command
	// type it does not know); see Fatal.
	fatal     chan error
	fatalOnce sync.Once

	// lock keeps other processes off the data dir while the node runs.
	lock *dirlock.Lock

	closeOnce sync.Once
	closing   chan struct{}
	wg        sync.WaitGroup
}

// New starts a node: it binds Addr, starts the NATS server, and either starts
// Raft (a voter) or starts tracking the voters (a proxy). A voter's new data
// dir is bootstrapped as a cluster of Peers (or of this node alone); an
// existing one is recovered.
func New(cfg Config) (*Node, error) {
	cfg.setDefaults()
	if err := os.MkdirAll(cfg.DataDir, 0o755); err != nil {
		return nil, fmt.Errorf("creating data dir: %w", err)
	}
	// Before anything in the directory is opened: a second process would
	// otherwise wait forever on the Raft store's lock.
	lock, err := dirlock.Acquire(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		lock.Release()
		return nil, fmt.Errorf("listening on %s: %w", cfg.Addr, err)
	}
	advertise := cfg.Advertise
	if advertise == "" {
		advertise = ln.Addr().String()
	}
	n := &Node{
		cfg:        cfg,
		log:        cfg.Log,
		advertise:  advertise,
		hub:        newHub(),
		heartbeats: newHeartbeatTable(),
		fwd:        newForwarder(&cfg),
		closing:    make(chan struct{}),
		lock:       lock,
		fatal:      make(chan error, 1),
	}
	n.commandMax.Store(uint32(min(fsm.BaselineCommandType, cfg.MaxCommandType)))
	n.metrics = newMetrics(n)
	if cfg.PeerTLS != nil {
		n.raftTLS = cfg.PeerTLS.Clone()
		n.raftTLS.NextProtos = []string{RaftALPN}
	}
	n.mux = newPortMux(ln, advertisedAddr(advertise), n.log, cfg.TLS, cfg.CountConn, cfg.NodeConn)
	if cfg.NATS {
		if err := n.startNATS(); err != nil {
			n.mux.close()
			lock.Release()
			return nil, err
		}
	}
	if n.isVoterAddr() {
		v, err := n.startVoter(true)
		if err != nil {
			n.stopNATS()
			n.mux.close()
			lock.Release()
			return nil, err
		}
		n.v.Store(v)
		n.subscribeHeartbeats(v)
	} else {
		n.setVoters(cfg.Peers)
		n.log.Info().Strs("voters", cfg.Peers).Msg("running as a proxy")
	}
	n.wg.Add(1)
	go n.runClusterUpkeep()
	return n, nil
}

// isVoterAddr reports whether the configured peers make this node a voter.
func (n *Node) isVoterAddr() bool {
	return len(n.cfg.Peers) == 0 || slices.Contains(n.cfg.Peers, n.advertise)
}

func (n *Node) startNATS() error {
	cfg := bus.ServerConfig{
		Name:       n.advertise,
		ClientAddr: n.cfg.NATSAddr,
		MaxConns:   n.cfg.NATSMaxConns,
		MaxSubs:    n.cfg.NATSMaxSubs,
		MaxPayload: n.cfg.NATSMaxPayload,
		Auth:       n.cfg.NATSAuth,
		TLS:        n.cfg.NATSTLS,
		Log:        n.log,
	}
	if cfg.ClientAddr == "" {
		cfg.ClientAddr = bus.ClientAddrOff
	}
	if n.isVoterAddr() {
		cfg.ClusterAddr = n.cfg.NATSClusterAddr
		cfg.LeafAddr = n.cfg.NATSLeafAddr
	}
	srv, err := bus.StartServer(cfg)
	if err != nil {
		return err
	}
	// NoEcho: a heartbeat this node republishes for the other voters must not
	// come back to itself.
	nc, err := srv.Connect(nats.NoEcho())
	if err != nil {
		srv.Shutdown()
		return err
	}
	n.nats, n.nc = srv, nc
	n.publisher = bus.NewEventPublisher(nc, n.log)
	n.hub.onEvent(n.publishEvent)
	ev := n.log.Info().Str("nats_client_addr", srv.ClientAddr())
	if a := srv.ClusterAddr(); a != "" {
		ev = ev.Str("nats_cluster_addr", a)
	}
	if a := srv.LeafAddr(); a != "" {
		ev = ev.Str("nats_leaf_addr", a)
	}
	ev.Msg("nats started")
	return nil
}

func (n *Node) stopNATS() {
	if n.nats == nil {
		return
	}
	n.unsubscribeHeartbeats()
	n.nc.Close()
	n.nats.Shutdown()
}

// publishEvent sends an applied event on NATS, from the Raft leader only, so
// each event goes out once. It runs in the FSM sink and never blocks on a
// subscriber: the NATS server cuts slow consumers off itself.
func (n *Node) publishEvent(ev *api.Event) {
	if v := n.v.Load(); v != nil && v.isLeader() {
		n.publisher.Publish(ev)
	}
}

// SetNATSAuth replaces the NATS users after the auth file was reloaded.
func (n *Node) SetNATSAuth(a *bus.ServerAuth) error {
	if n.nats == nil {
		return nil
	}
	return n.nats.SetAuth(a)
}

// NATSURL is the nats:// URL of the embedded server's client port, "" when
// NATS is off.
func (n *Node) NATSURL() string {
	if n.nats == nil {
		return ""
	}
	return n.nats.ClientURL()
}

// Info is what this node announces to the cluster.
func (n *Node) Info() api.NodeInfo {
	info := api.NodeInfo{Addr: n.advertise, Version: version.Get(), MaxCommandType: uint8(n.cfg.MaxCommandType)}
	if n.nats != nil {
		if a := n.nats.ClientAddr(); a != bus.ClientAddrOff {
			info.NATSAddr = n.reachable(a)
		}
		info.NATSCluster = n.reachable(n.nats.ClusterAddr())
		info.NATSLeaf = n.reachable(n.nats.LeafAddr())
	}
	return info
}

// reachable turns a bound address into one other nodes can dial: a port
// bound on every interface (0.0.0.0:6222, as in a container) is announced on
// the host of the advertised address.
func (n *Node) reachable(bound string) string {
	host, port, err := net.SplitHostPort(bound)
	if err != nil || bound == "" {
		return bound
	}
	if ip := net.ParseIP(host); host != "" && (ip == nil || !ip.IsUnspecified()) {
		return bound
	}
	advHost, _, err := net.SplitHostPort(n.advertise)
	if err != nil {
		return bound
	}
	return net.JoinHostPort(advHost, port)
}

// onEvents is the state machine's sink: it keeps the heartbeat table in step
// with the registry and fans the events out. It runs under the FSM write lock.
func (n *Node) onEvents(events []api.Event, restored bool) {
	now := time.Now().UnixNano()
	for i := range events {
		ev := &events[i]
		switch ev.Kind {
		case api.EventUp:
			// Registration counts as a heartbeat: the clock starts now.
			n.heartbeats.touchIfAbsent(hbKey{ev.Service, ev.Instance.ID}, now)
		case api.EventDown:
			n.heartbeats.remove(hbKey{ev.Service, ev.Instance.ID})
		}
	}
	n.hub.publish(events, restored)
}

// Addr is the address the node listens on.
func (n *Node) Addr() string { return n.mux.ln.Addr().String() }

// Advertise is the address other nodes reach this one at.
func (n *Node) Advertise() string { return n.advertise }

// HTTPListener yields the HTTP connections of the node's port.
func (n *Node) HTTPListener() net.Listener { return n.mux.http }

// IsProxy reports whether the node is a proxy (no Raft state).
func (n *Node) IsProxy() bool { return n.v.Load() == nil }

// IsLeader reports whether this node is the Raft leader.
func (n *Node) IsLeader() bool {
	v := n.v.Load()
	return v != nil && v.isLeader()
}

// FSM is the voter's state machine, nil on a proxy.
func (n *Node) FSM() *fsm.FSM {
	if v := n.v.Load(); v != nil {
		return v.fsm
	}
	return nil
}

// WaitLeader blocks until the cluster has a known leader and this node is
// ready to serve, or ctx ends.
func (n *Node) WaitLeader(ctx context.Context) error {
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		if n.RaftLeader() != "" && n.Ready() {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// EndStreams closes every event stream with ErrShutdown, so that a server
// shutting down is not held open by long-lived SSE responses.
func (n *Node) EndStreams() { n.hub.closeAll(ErrShutdown) }

// Close shuts the node down: streams end, Raft stops and its stores are
// synced and closed, NATS stops, and the port is released.
func (n *Node) Close() error {
	var err error
	n.closeOnce.Do(func() {
		close(n.closing)
		n.hub.closeAll(ErrShutdown)
		n.unsubscribeHeartbeats()
		if v := n.v.Swap(nil); v != nil {
			err = v.stop()
		}
		n.wg.Wait()
		n.stopNATS()
		n.mux.close()
		if lerr := n.lock.Release(); err == nil {
			err = lerr
		}
	})
	return err
}

// Ready reports whether the node serves requests: a voter whose state
// machine has caught up with the cluster since it started, or a proxy.
func (n *Node) Ready() bool {
	v := n.v.Load()
	return v == nil || v.ready.Load()
}
