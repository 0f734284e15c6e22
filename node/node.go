package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/discoverd/discoverd/api"
	"github.com/discoverd/discoverd/fsm"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
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
	// Peers are the voters' advertised addresses; empty makes this node a
	// single-voter cluster of its own.
	Peers []string
	// InstanceTTL is how long an instance lives without a heartbeat.
	InstanceTTL time.Duration
	// ExpiryCheckInterval is how often the leader looks for expired instances.
	ExpiryCheckInterval time.Duration
	// RaftHeartbeatTimeout sets the Raft heartbeat and election timeouts; zero
	// picks 100ms for a single voter and 500ms for a cluster.
	RaftHeartbeatTimeout time.Duration
	Log                  zerolog.Logger
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
	if c.ExpiryCheckInterval <= 0 {
		c.ExpiryCheckInterval = time.Second
	}
	if c.RaftHeartbeatTimeout <= 0 {
		if len(c.Peers) > 1 {
			c.RaftHeartbeatTimeout = 500 * time.Millisecond
		} else {
			c.RaftHeartbeatTimeout = 100 * time.Millisecond
		}
	}
}

// Node is one discoverd process: a Raft voter holding the registry, the
// heartbeat table and expirer, and the event fan-out to subscribers.
type Node struct {
	cfg       Config
	log       zerolog.Logger
	advertise string

	mux       *portMux
	fsm       *fsm.FSM
	raftFSM   *raftFSM
	raft      *raft.Raft
	store     *raftboltdb.BoltStore
	transport *raft.NetworkTransport

	hub        *hub
	heartbeats *heartbeatTable

	// leaderSince is when this node last became Raft leader (Unix nanos), 0
	// when it is not leader.
	leaderSince atomic.Int64

	closeOnce sync.Once
	closing   chan struct{}
	wg        sync.WaitGroup
}

// raftFSM tells the hub which events come from a snapshot restore. Apply and
// Restore both run on Raft's FSM goroutine, so the flag needs no lock.
type raftFSM struct {
	*fsm.FSM
	restoring bool
}

func (r *raftFSM) Restore(rc io.ReadCloser) error {
	r.restoring = true
	defer func() { r.restoring = false }()
	return r.FSM.Restore(rc)
}

// New starts a node: it binds Addr, opens or creates the data dir, and starts
// Raft. A new data dir is bootstrapped as a cluster of Peers (or of this node
// alone); an existing one is recovered.
func New(cfg Config) (*Node, error) {
	cfg.setDefaults()
	if err := os.MkdirAll(cfg.DataDir, 0o755); err != nil {
		return nil, fmt.Errorf("creating data dir: %w", err)
	}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
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
		closing:    make(chan struct{}),
	}
	n.mux = newPortMux(ln, advertisedAddr(advertise))
	n.fsm = fsm.New(n.onEvents)
	n.raftFSM = &raftFSM{FSM: n.fsm}
	if err := n.startRaft(); err != nil {
		n.mux.close()
		return nil, err
	}
	n.wg.Add(2)
	go n.watchLeadership()
	go n.runExpirer()
	return n, nil
}

func (n *Node) startRaft() error {
	cfg := n.cfg
	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(n.advertise)
	rc.HeartbeatTimeout = cfg.RaftHeartbeatTimeout
	rc.ElectionTimeout = cfg.RaftHeartbeatTimeout
	rc.LeaderLeaseTimeout = cfg.RaftHeartbeatTimeout / 2
	rc.CommitTimeout = 5 * time.Millisecond
	// Batching lets concurrent registrations share one disk write.
	rc.BatchApplyCh = true
	rc.MaxAppendEntries = 512
	rc.SnapshotThreshold = 16384
	rc.TrailingLogs = 10240
	rc.NoLegacyTelemetry = true
	rc.Logger = newRaftLogger(n.log)

	store, err := raftboltdb.New(raftboltdb.Options{Path: filepath.Join(cfg.DataDir, "raft.db")})
	if err != nil {
		return fmt.Errorf("opening raft store: %w", err)
	}
	n.store = store
	logs, err := raft.NewLogCache(1024, store)
	if err != nil {
		store.Close()
		return err
	}
	snaps, err := raft.NewFileSnapshotStoreWithLogger(cfg.DataDir, 2, rc.Logger)
	if err != nil {
		store.Close()
		return fmt.Errorf("opening snapshot store: %w", err)
	}
	n.transport = raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream:  raftStream{n.mux.raft},
		MaxPool: 4,
		Timeout: 5 * time.Second,
		Logger:  rc.Logger,
	})
	existing, err := raft.HasExistingState(logs, store, snaps)
	if err != nil {
		store.Close()
		return err
	}
	r, err := raft.NewRaft(rc, n.raftFSM, logs, store, snaps, n.transport)
	if err != nil {
		store.Close()
		return fmt.Errorf("starting raft: %w", err)
	}
	n.raft = r
	if !existing {
		peers := cfg.Peers
		if len(peers) == 0 {
			peers = []string{n.advertise}
		}
		var servers []raft.Server
		for _, p := range peers {
			servers = append(servers, raft.Server{ID: raft.ServerID(p), Address: raft.ServerAddress(p), Suffrage: raft.Voter})
		}
		if err := r.BootstrapCluster(raft.Configuration{Servers: servers}).Error(); err != nil && !errors.Is(err, raft.ErrCantBootstrap) {
			r.Shutdown()
			store.Close()
			return fmt.Errorf("bootstrapping raft: %w", err)
		}
		n.log.Info().Strs("voters", peers).Msg("bootstrapped a new cluster")
	} else {
		n.log.Info().Str("data_dir", cfg.DataDir).Msg("recovering from existing state")
	}
	return nil
}

// onEvents is the state machine's sink: it keeps the heartbeat table in step
// with the registry and fans the events out. It runs under the FSM write lock.
func (n *Node) onEvents(events []api.Event) {
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
	n.hub.publish(events, n.raftFSM.restoring)
}

// Addr is the address the node listens on.
func (n *Node) Addr() string { return n.mux.ln.Addr().String() }

// Advertise is the address other nodes reach this one at.
func (n *Node) Advertise() string { return n.advertise }

// HTTPListener yields the HTTP connections of the node's port.
func (n *Node) HTTPListener() net.Listener { return n.mux.http }

// FSM exposes the state machine for reads by the daemon's other parts.
func (n *Node) FSM() *fsm.FSM { return n.fsm }

// IsLeader reports whether this node is the Raft leader.
func (n *Node) IsLeader() bool { return n.raft.State() == raft.Leader }

// WaitLeader blocks until the cluster has a leader, or ctx ends.
func (n *Node) WaitLeader(ctx context.Context) error {
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		if addr, _ := n.raft.LeaderWithID(); addr != "" {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// watchLeadership tracks when this node leads.
func (n *Node) watchLeadership() {
	defer n.wg.Done()
	ch := n.raft.LeaderCh()
	for {
		select {
		case <-n.closing:
			return
		case isLeader := <-ch:
			if isLeader {
				now := time.Now().UnixNano()
				// A node that was not leader cannot trust how complete its
				// heartbeat times are, so every instance gets a full TTL from now.
				n.heartbeats.resetAll(now)
				n.leaderSince.Store(now)
				n.log.Info().Msg("became raft leader")
			} else {
				n.leaderSince.Store(0)
				n.log.Info().Msg("lost raft leadership")
			}
		}
	}
}

// Close shuts the node down: streams end, Raft stops and its stores are
// synced and closed, and the port is released.
func (n *Node) Close() error {
	var err error
	n.closeOnce.Do(func() {
		close(n.closing)
		n.hub.closeAll(ErrShutdown)
		err = n.raft.Shutdown().Error()
		n.wg.Wait()
		n.transport.Close()
		if cerr := n.store.Close(); err == nil {
			err = cerr
		}
		n.mux.close()
	})
	return err
}

// EndStreams closes every event stream with ErrShutdown, so that a server
// shutting down is not held open by long-lived SSE responses.
func (n *Node) EndStreams() { n.hub.closeAll(ErrShutdown) }
