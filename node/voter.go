package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/discoverd/discoverd/api"
	"github.com/discoverd/discoverd/fsm"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"go.etcd.io/bbolt"
)

// voter is the Raft side of a node: the state machine, Raft and its stores,
// and the goroutines that run while the node votes (leadership watch,
// expirer). A node that is promoted starts one; a demoted node stops it.
type voter struct {
	n         *Node
	fsm       *fsm.FSM
	raftFSM   *raftFSM
	raft      *raft.Raft
	store     *raftboltdb.BoltStore
	transport *raft.NetworkTransport
	stream    *chanListener
	nudge     *commitNudge
	// batcher writes concurrent registrations as one entry (batch.go).
	batcher registrationBatcher

	// leaderSince is when this node last became Raft leader (Unix nanos), 0
	// when it is not leader.
	leaderSince atomic.Int64
	// ready is set once the state machine has caught up with the cluster
	// after start: as leader, once every entry before its term is applied;
	// as follower, once it applied the leader's index.
	ready atomic.Bool
	// inStep is ready, but cleared whenever a follower loses contact with
	// the leader until it has caught up again; heartbeats need it, and
	// inStepUntil too.
	inStep atomic.Bool
	// inStepUntil is when "in step" lapses unless the step watcher
	// (awaitReady) confirms it again, on the clock of sinceStart: a process
	// that was stopped or starved cannot have noticed that it lost contact,
	// and must not answer from its old state before the watcher ran.
	inStepUntil atomic.Int64
	started     time.Time

	stopping chan struct{}
	wg       sync.WaitGroup
	stopOnce sync.Once
	stopErr  error
}

// raftFSM tells the hub which events come from a snapshot restore. Apply and
// Restore both run on Raft's FSM goroutine, so the flag needs no lock.
type raftFSM struct {
	*fsm.FSM
	heartbeats *heartbeatTable
	restoring  bool
	// maxType, counts, stopped, stopping and onUnknown: see checkEntry.
	maxType   fsm.CommandType
	counts    commandCounts
	stopped   atomic.Bool
	stopping  <-chan struct{}
	onUnknown func(t fsm.CommandType, index uint64)
	waiters   appliedWaiters
	nudge     *commitNudge
}

// Snapshot refuses once the node stopped applying: its state no longer
// matches the index Raft would record.
func (r *raftFSM) Snapshot() (raft.FSMSnapshot, error) {
	if r.stopped.Load() {
		return nil, errStoppedApplying
	}
	return r.FSM.Snapshot()
}

func (r *raftFSM) Restore(rc io.ReadCloser) error {
	r.restoring = true
	defer func() { r.restoring = false }()
	if err := r.FSM.Restore(rc); err != nil {
		return err
	}
	// Whatever a restore brought back gets a full TTL from now: the times
	// heard before describe another state.
	r.heartbeats.resetAll(time.Now().UnixNano())
	return nil
}

const raftDBFile = "raft.db"

// startVoter opens the Raft stores in the data dir and starts Raft. With
// bootstrap, a data dir holding no Raft state is bootstrapped as a cluster of
// the configured peers (or of this node alone); without it (a promoted proxy)
// the node waits for the leader to add it.
func (n *Node) startVoter(bootstrap bool) (*voter, error) {
	cfg := n.cfg
	v := &voter{n: n, stopping: make(chan struct{}), started: time.Now()}
	v.batcher.v = v
	v.nudge = newCommitNudge(&n.multiVoter)
	rv := &raftFSM{heartbeats: n.heartbeats, maxType: cfg.MaxCommandType, stopping: v.stopping, nudge: v.nudge}
	rv.onUnknown = func(t fsm.CommandType, index uint64) { n.stopFatally(n.unknownCommand(t, index)) }
	v.raftFSM = rv
	v.fsm = fsm.New(func(events []api.Event) { n.onEvents(events, rv.restoring) })
	rv.FSM = v.fsm

	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(n.advertise)
	rc.HeartbeatTimeout = cfg.RaftHeartbeatTimeout
	rc.ElectionTimeout = cfg.RaftHeartbeatTimeout
	// The leader keeps leading until it has gone a whole election timeout
	// without hearing from a quorum, the same contact rule a follower's
	// heartbeats live by, and the longest lease Raft allows. With half of
	// it, a leader whose process was starved of CPU for a little longer
	// than that (a busy host) stepped down while every follower still
	// followed it, and the cluster had no leader until it had re-elected
	// one: writes in flight failed and heartbeats were refused for nothing.
	// A partitioned leader still steps down before the others can have
	// elected a new one (their election timeout is at least this long).
	rc.LeaderLeaseTimeout = cfg.RaftHeartbeatTimeout
	// Followers learn the commit index of new entries from the commit
	// nudge (commitnudge.go) right after the leader applies them, so the
	// CommitTimeout timer only matters when a nudge is lost (a leader
	// change); a short one woke every voter every few ms while idle.
	rc.CommitTimeout = cfg.RaftCommitTimeout
	// Concurrent registrations share one disk write: the leader loop takes
	// every apply that is waiting, up to MaxAppendEntries. (BatchApplyCh is
	// left off: applies buffered in it are never answered if Raft shuts down.)
	rc.MaxAppendEntries = 512
	rc.SnapshotThreshold = 16384
	rc.TrailingLogs = 10240
	// Raft looks at SnapshotThreshold only this often (its default is two
	// minutes, plus up to as much again). While a million instances were
	// registered, two minutes of log grew the mapped log file to 160-230
	// MB, a quarter of each voter's memory; checked every 20 s the log is
	// compacted before it grows that far, and a check that finds fewer new
	// entries than the threshold costs nothing.
	rc.SnapshotInterval = 20 * time.Second
	rc.NoLegacyTelemetry = true
	rc.Logger = newRaftLogger(n.log)

	store, err := raftboltdb.New(raftboltdb.Options{
		Path: filepath.Join(cfg.DataDir, raftDBFile),
		// The freelist is rebuilt by scanning the file when it is opened
		// instead of being written (a page or more) with every commit: a
		// quarter less file for the same log, and less CPU per commit. The
		// map freelist allocates in O(1) where the array one scans. Every
		// commit is still fdatasync'd (NoSync stays off).
		// The Timeout is a second guard behind the data dir lock (the
		// node's dirlock): never wait forever on the file.
		BoltOptions: &bbolt.Options{NoFreelistSync: true, FreelistType: bbolt.FreelistMapType, Timeout: 5 * time.Second},
	})
	if err != nil {
		return nil, fmt.Errorf("opening raft store: %w", err)
	}
	v.store = store
	logs, err := raft.NewLogCache(1024, store)
	if err != nil {
		store.Close()
		return nil, err
	}
	fileSnaps, err := raft.NewFileSnapshotStoreWithLogger(cfg.DataDir, 2, rc.Logger)
	if err != nil {
		store.Close()
		return nil, fmt.Errorf("opening snapshot store: %w", err)
	}
	snaps := indexedStore{fileSnaps}
	v.stream = n.mux.newRaftListener()
	v.transport = raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream:  raftStream{chanListener: v.stream, tls: n.raftTLS},
		MaxPool: 4,
		Timeout: 5 * time.Second,
		Logger:  rc.Logger,
	})
	existing, err := raft.HasExistingState(logs, store, snaps)
	if err != nil {
		v.transport.Close()
		store.Close()
		return nil, err
	}
	r, err := raft.NewRaft(rc, rv, logs, store, snaps, v.transport)
	if err != nil {
		v.transport.Close()
		store.Close()
		return nil, fmt.Errorf("starting raft: %w", err)
	}
	v.raft = r
	v.nudge.raft.Store(r)
	switch {
	case existing:
		n.log.Info().Str("data_dir", cfg.DataDir).Msg("recovering raft state from the data dir")
	case bootstrap:
		peers := cfg.Peers
		if len(peers) == 0 {
			peers = []string{n.advertise}
		}
		var servers []raft.Server
		for _, p := range peers {
			servers = append(servers, raft.Server{ID: raft.ServerID(p), Address: raft.ServerAddress(p), Suffrage: raft.Voter})
		}
		if err := r.BootstrapCluster(raft.Configuration{Servers: servers}).Error(); err != nil && !errors.Is(err, raft.ErrCantBootstrap) {
			v.stop()
			return nil, fmt.Errorf("bootstrapping raft: %w", err)
		}
		n.log.Info().Strs("voters", peers).Msg("bootstrapped a new cluster")
	default:
		n.log.Info().Msg("raft started without a configuration; waiting to be added by the leader")
	}
	v.wg.Add(4)
	go func() {
		defer v.wg.Done()
		v.nudge.run(v.stopping, func(err error) {
			n.log.Debug().Err(err).Msg("raft commit nudge")
		})
	}()
	go v.watchLeadership()
	go v.runExpirer()
	go v.awaitReady()
	return v, nil
}

func (v *voter) isLeader() bool { return v.raft.State() == raft.Leader }

// watchLeadership tracks when this node leads. On taking over it decides
// whether its heartbeat table can be trusted, and republishes every
// service's leader so NATS subscribers that missed events converge.
func (v *voter) watchLeadership() {
	defer v.wg.Done()
	ch := v.raft.LeaderCh()
	for {
		select {
		case <-v.stopping:
			return
		case isLeader := <-ch:
			if !isLeader {
				v.leaderSince.Store(0)
				// A deposed leader may be behind the new one.
				v.inStep.Store(false)
				v.n.log.Info().Msg("lost raft leadership")
				continue
			}
			now := time.Now()
			feed := v.n.feedSince.Load()
			trusted := len(v.n.clusterVoters()) > 1 && feed != 0 && now.Sub(time.Unix(0, feed)) >= v.n.cfg.InstanceTTL
			if !trusted {
				// Times heard over a feed connected for less than a TTL (or a
				// node that just started) may be stale: every instance gets a
				// full TTL from now.
				v.n.heartbeats.resetAll(now.UnixNano())
			} else if lost := v.raft.LastContact(); !lost.IsZero() {
				v.n.heartbeats.atLeast(lost.UnixNano())
			}
			// Said as what it means for instances: either the heartbeat
			// times this node heard as a follower stand, or every instance
			// gets a full TTL from now.
			v.n.log.Info().Bool("kept_heartbeat_times", trusted).Msg("became raft leader")
			// A new leader may not have applied everything its predecessor
			// committed; the barrier waits until it has, so that it neither
			// serves, expires nor republishes from an old state.
			if !v.awaitBarrier() {
				continue
			}
			v.leaderSince.Store(now.UnixNano())
			v.ready.Store(true)
			v.setInStep()
			v.n.republishLeaders(v)
		}
	}
}

var errCatchingUp = api.Errorf(api.CodeUnavailable, "this node is catching up with the raft log after starting; retry shortly or ask another node")

func (v *voter) readyErr() error {
	if v.ready.Load() {
		return nil
	}
	return errCatchingUp
}

// awaitReady marks a follower ready, and in step, once it has applied
// everything the leader had applied when asked, and keeps "in step" current
// on leader and follower alike. It clears it whenever a follower loses
// contact with the leader (a partition, a pause), so that a voter that
// rejoins does not acknowledge heartbeats from a state the majority has
// moved past, and whenever the watcher itself did not run for longer than
// the step lease: a stopped process finds old messages of the
// leader in its sockets, which make it look in contact. (A leader is marked
// by watchLeadership after its barrier.)
func (v *voter) awaitReady() {
	defer v.wg.Done()
	t := time.NewTicker(stepWatchInterval)
	defer t.Stop()
	lease := int64(v.stepLease())
	last := v.sinceStart()
	for {
		select {
		case <-v.stopping:
			return
		case <-t.C:
		}
		now := v.sinceStart()
		if now-last > lease {
			v.inStep.Store(false)
		}
		last = now
		switch v.raft.State() {
		case raft.Leader:
			v.leaderStep()
		case raft.Follower:
			v.followerStep()
		}
	}
}

// followerStep is one round of awaitReady on a follower.
func (v *voter) followerStep() {
	if !v.inContact() {
		v.inStep.Store(false)
		return
	}
	if v.inStep.Load() {
		v.setInStep()
		return
	}
	leader, _ := v.raft.LeaderWithID()
	if leader == "" {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	res, err := v.n.fwd.forward(ctx, string(leader), nil)
	if err == nil && v.waitApplied(ctx, res.Index) {
		v.ready.Store(true)
		v.setInStep()
	}
}

// leaderStep is one round of awaitReady on the leader: after a stall it
// confirms with a quorum that it still leads before it answers again.
func (v *voter) leaderStep() {
	if v.leaderSince.Load() == 0 {
		// watchLeadership has not finished taking over.
		return
	}
	if !v.inStep.Load() && v.raft.VerifyLeader().Error() != nil {
		return
	}
	if v.leaderSince.Load() != 0 {
		v.setInStep()
	}
}

// stepWatchInterval is how often awaitReady runs. A heartbeat checks
// contact and the step lease itself, so the period only bounds how soon a
// node that caught up again (or a leader after a stall) answers again; each
// run wakes every voter, so at idle it is most of a follower's CPU.
const stepWatchInterval = 50 * time.Millisecond

// sinceStart is the voter's monotonic clock.
func (v *voter) sinceStart() int64 { return int64(time.Since(v.started)) }

// stepLease is how long "in step" holds without the step watcher: two Raft
// heartbeat timeouts and at least half a second, so that a watcher held up
// by a busy machine does not turn clients away, while a process stopped for
// long enough for the leader to move on answers nothing from before.
func (v *voter) stepLease() time.Duration {
	return max(2*v.n.cfg.RaftHeartbeatTimeout, 500*time.Millisecond)
}

// setInStep marks the node in step for a step lease.
func (v *voter) setInStep() {
	v.inStepUntil.Store(v.sinceStart() + int64(v.stepLease()))
	v.inStep.Store(true)
}

var errOutOfStep = api.Errorf(api.CodeUnavailable, "this node is catching up with the raft leader after losing contact; retry shortly or ask another node")

// inStepErr says whether the node may acknowledge a heartbeat from its own
// state: it leads, or it follows and has caught up since it last lost
// contact with the leader, and the step watcher confirmed it lately.
func (v *voter) inStepErr() error {
	if v.inStep.Load() && v.sinceStart() < v.inStepUntil.Load() {
		return nil
	}
	return errOutOfStep
}

// awaitBarrier waits until every entry before this leader's term is applied,
// retrying while it still leads; it reports false once it no longer does.
func (v *voter) awaitBarrier() bool {
	for v.isLeader() {
		err := v.raft.Barrier(v.n.cfg.InstanceTTL).Error()
		if err == nil {
			return true
		}
		if errors.Is(err, raft.ErrRaftShutdown) {
			// The node is stopping: nothing to wait for, nothing to warn of.
			return false
		}
		select {
		case <-v.stopping:
			// Stopped while the barrier was in flight: Raft's shutdown
			// fails it as leadership lost, which is no news either.
			return false
		default:
		}
		v.n.log.Warn().Err(err).Msg("waiting for the log to be applied after election")
		select {
		case <-v.stopping:
			return false
		case <-time.After(50 * time.Millisecond):
		}
	}
	return false
}

// republishLeaders sends the current leader event of every service on NATS.
func (n *Node) republishLeaders(v *voter) {
	if n.publisher == nil {
		return
	}
	events := v.fsm.LeaderEvents()
	n.log.Debug().Int("services", len(events)).Msg("republishing leaders")
	for i := range events {
		n.publisher.Publish(&events[i])
	}
}

// stop shuts Raft down and closes its stores; the data stays on disk.
func (v *voter) stop() error {
	v.stopOnce.Do(func() {
		close(v.stopping)
		v.stopErr = v.raft.Shutdown().Error()
		v.wg.Wait()
		v.transport.Close()
		if err := v.store.Close(); v.stopErr == nil {
			v.stopErr = err
		}
	})
	return v.stopErr
}

// wipeRaftState removes the Raft log, stable store and snapshots, so that a
// node demoted to proxy can later be promoted with a clean slate.
func (n *Node) wipeRaftState() error {
	if err := os.Remove(filepath.Join(n.cfg.DataDir, raftDBFile)); err != nil && !os.IsNotExist(err) {
		return err
	}
	return os.RemoveAll(filepath.Join(n.cfg.DataDir, "snapshots"))
}
