package node

import (
	"context"
	"errors"
	"time"

	"github.com/discoverd/discoverd/api"
	"github.com/discoverd/discoverd/fsm"
	"github.com/discoverd/discoverd/internal/version"
	"github.com/hashicorp/raft"
)

// defaultApplyTimeout bounds a write whose context has no deadline.
const defaultApplyTimeout = 10 * time.Second

// apply appends a command to the Raft log and waits for the state machine's
// answer. Only a result from an applied entry is returned without error, so
// a write is acknowledged only once it is committed.
func (n *Node) apply(ctx context.Context, t fsm.CommandType, body any) (*fsm.Result, error) {
	cmd, err := fsm.Encode(t, body)
	if err != nil {
		return nil, api.Errorf(api.CodeValidation, "encoding %s: %v", t, err)
	}
	return n.applyEncoded(ctx, cmd)
}

func (n *Node) applyEncoded(ctx context.Context, cmd []byte) (*fsm.Result, error) {
	v, err := n.voter()
	if err != nil {
		return nil, err
	}
	leader, isLeader := n.awaitLeader(ctx, v)
	if isLeader {
		return v.applyLocal(ctx, cmd)
	}
	if leader == "" {
		return nil, n.noLeaderError()
	}
	res, err := n.forwardWrite(ctx, leader, cmd)
	if err != nil {
		return nil, err
	}
	// Answer only once this node has applied the write too, so a client that
	// reads here next sees its own write.
	v.waitApplied(ctx, res.Index)
	return res, nil
}

// forwardWrite applies cmd on the leader at addr: together with the other
// writes waiting to go there once every voter serves batches of them (a
// release that applies fsm.CmdAddInstances does), alone before.
func (n *Node) forwardWrite(ctx context.Context, addr string, cmd []byte) (*fsm.Result, error) {
	if n.clusterCommandMax() >= fsm.CmdAddInstances {
		return n.fwd.batcher.forward(ctx, addr, cmd)
	}
	return n.fwd.forward(ctx, addr, cmd)
}

// voter returns the node's Raft side, or service_unavailable on a proxy
// (whose HTTP requests are forwarded before they get here).
func (n *Node) voter() (*voter, error) {
	if v := n.v.Load(); v != nil {
		return v, nil
	}
	return nil, errProxy
}

func (v *voter) applyLocal(ctx context.Context, cmd []byte) (*fsm.Result, error) {
	if v.batchable(cmd) {
		return v.batcher.apply(ctx, cmd)
	}
	return v.applyRaft(ctx, cmd)
}

// applyRaft writes cmd as its own entry.
func (v *voter) applyRaft(ctx context.Context, cmd []byte) (*fsm.Result, error) {
	timeout, err := applyTimeout(ctx)
	if err != nil {
		return nil, err
	}
	f, err := v.submit(cmd, timeout)
	if err != nil {
		return nil, err
	}
	return v.result(f)
}

// submit hands cmd to Raft, waiting at most timeout for Raft to take it.
func (v *voter) submit(cmd []byte, timeout time.Duration) (raft.ApplyFuture, error) {
	// The leader writes a command type only once every voter applies it
	// (see upgrade.go); a follower of an older release may have sent the
	// newer form, or a newer one the older.
	if len(cmd) > 0 {
		if max := v.n.clusterCommandMax(); fsm.CommandType(cmd[0]) > max {
			var err error
			if cmd, err = fsm.ForMaxType(cmd, max); err != nil {
				return nil, err
			}
		}
	}
	return v.raft.Apply(cmd, timeout), nil
}

// result waits for an entry handed to Raft to be applied here.
func (v *voter) result(f raft.ApplyFuture) (*fsm.Result, error) {
	if err := f.Error(); err != nil {
		return nil, raftError(err)
	}
	res, ok := f.Response().(*fsm.Result)
	if !ok {
		return nil, api.Errorf(api.CodeUnknown, "unexpected apply response %T", f.Response())
	}
	return res, res.Err
}

func (n *Node) noLeaderError() error {
	addr := n.RaftLeader()
	if addr == "" {
		return api.Errorf(api.CodeUnavailable, "no raft leader is known to this node")
	}
	return api.Errorf(api.CodeUnavailable, "this node is not the raft leader (the leader is %s)", addr)
}

// raftError maps Raft's errors to API errors. Every one of them leaves the
// write unacknowledged; the caller may retry.
func raftError(err error) error {
	switch {
	case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrLeadershipLost),
		errors.Is(err, raft.ErrLeadershipTransferInProgress):
		return api.Errorf(api.CodeUnavailable, "raft leadership changed during the write: %v", err)
	case errors.Is(err, raft.ErrRaftShutdown):
		return api.Errorf(api.CodeUnavailable, "the node is shutting down")
	case errors.Is(err, raft.ErrEnqueueTimeout):
		return api.Errorf(api.CodeUnavailable, "the raft log is overloaded: %v", err)
	}
	return api.Errorf(api.CodeUnavailable, "raft: %v", err)
}

// AddService creates a service.
func (n *Node) AddService(ctx context.Context, name string, cfg api.ServiceConfig) (uint64, error) {
	res, err := n.apply(ctx, fsm.CmdAddService, &fsm.AddService{Service: name, Config: cfg})
	if err != nil {
		return 0, err
	}
	return res.Index, nil
}

// RemoveService removes a service with its instances, meta and leader.
func (n *Node) RemoveService(ctx context.Context, name string) (uint64, error) {
	res, err := n.apply(ctx, fsm.CmdRemoveService, &fsm.RemoveService{Service: name})
	if err != nil {
		return 0, err
	}
	return res.Index, nil
}

// Heartbeat registers inst if it is new or changed, and otherwise only
// refreshes its heartbeat time without touching the Raft log. inst must
// already be validated (api.PrepareInstance). Both transports call it.
func (n *Node) Heartbeat(ctx context.Context, service string, inst *api.Instance) (*api.Instance, error) {
	return n.heartbeat(ctx, service, inst, false)
}

func (n *Node) heartbeat(ctx context.Context, service string, inst *api.Instance, fromBus bool) (*api.Instance, error) {
	v, err := n.voter()
	if err != nil {
		return nil, err
	}
	// An HTTP heartbeat waits out a start-up or an election like any
	// request that needs the leader. One from NATS does not: its
	// subscription serves every heartbeat in turn, and a wait would hold up
	// the rest behind it.
	wait := func(cond func() bool) bool { return cond() || !fromBus && n.awaitCond(ctx, cond) }
	if !wait(v.inContact) {
		n.recordRefused(v, service, inst)
		return nil, n.noLeaderError()
	}
	if err := v.inStepErr(); err != nil && !wait(func() bool { return v.inStepErr() == nil }) {
		n.recordRefused(v, service, inst)
		return nil, err
	}
	// The table keys on the state machine's own strings, so it keeps no
	// request's memory alive.
	name, stored, err := v.fsm.Lookup(service, inst.ID)
	if err != nil {
		// A follower may not have applied the service's creation yet: the
		// leader, not this node's lagging state, says whether it exists.
		if v.isLeader() || !api.IsCode(err, api.CodeNotFound) {
			return nil, err
		}
		name = service
	}
	if stored != nil && stored.SameRegistration(inst) {
		if v.isLeader() {
			n.shareHeartbeat(service, stored, fromBus)
		} else if err := n.relayHeartbeat(ctx, v, service, stored); err != nil {
			return nil, err
		}
		n.heartbeats.touch(hbKey{name, stored.ID}, time.Now().UnixNano())
		return stored, nil
	}
	// The compact encoding (a third of the JSON's bytes in the log, and no
	// reflection to build or to apply) once every voter applies it.
	res, err := n.applyEncoded(ctx, n.encodeRegistration(service, inst))
	if err != nil {
		return nil, err
	}
	n.heartbeats.touch(hbKey{name, res.Instance.ID}, time.Now().UnixNano())
	n.shareHeartbeat(service, res.Instance, fromBus)
	return res.Instance, nil
}

// recordRefused records the time of a heartbeat the node refuses to
// acknowledge (out of contact or out of step) when it carries an instance
// registered unchanged. The client is told to go elsewhere, but the
// instance did show it is alive: were the time dropped, this node, once it
// leads or is back in step, would judge the instance by an older heartbeat
// and could expire it although it never stopped (a starved leader whose
// step watcher ran late refused every heartbeat for a while, and expired
// them all once it ran again).
func (n *Node) recordRefused(v *voter, service string, inst *api.Instance) {
	if name, stored, err := v.fsm.Lookup(service, inst.ID); err == nil && stored != nil && stored.SameRegistration(inst) {
		n.heartbeats.touch(hbKey{name, stored.ID}, nowNanos())
	}
}

// inContact reports whether this node may accept a heartbeat: it leads, or
// it heard from a leader within the election timeout. Otherwise a client is
// told to go elsewhere rather than believe it is alive.
func (v *voter) inContact() bool {
	switch v.raft.State() {
	case raft.Leader:
		return true
	case raft.Follower:
		return time.Since(v.raft.LastContact()) < v.n.cfg.RaftHeartbeatTimeout
	}
	return false
}

// Deregister removes an instance.
func (n *Node) Deregister(ctx context.Context, service, id string) (uint64, error) {
	res, err := n.apply(ctx, fsm.CmdRemoveInstance, &fsm.RemoveInstance{Service: service, ID: id})
	if err != nil {
		return 0, err
	}
	return res.Index, nil
}

// SetLeader sets the leader of a manual service.
func (n *Node) SetLeader(ctx context.Context, service, id string) (uint64, error) {
	res, err := n.apply(ctx, fsm.CmdSetLeader, &fsm.SetLeader{Service: service, ID: id})
	if err != nil {
		return 0, err
	}
	return res.Index, nil
}

// SetServiceMeta writes a service's meta, compare-and-set on meta.Index.
func (n *Node) SetServiceMeta(ctx context.Context, service string, meta *api.ServiceMeta) (*api.ServiceMeta, error) {
	res, err := n.apply(ctx, fsm.CmdSetServiceMeta, &fsm.SetServiceMeta{Service: service, Meta: *meta})
	if err != nil {
		return nil, err
	}
	return res.Meta, nil
}

// Consistent returns once the local state holds every write acknowledged
// before the call: on the leader, after confirming it still leads; on a
// follower, once it has applied up to the leader's index.
func (n *Node) Consistent(ctx context.Context) error {
	v, err := n.voter()
	if err != nil {
		return err
	}
	leader, isLeader := n.awaitLeader(ctx, v)
	if isLeader {
		if err := v.raft.VerifyLeader().Error(); err != nil {
			return raftError(err)
		}
		return nil
	}
	if leader == "" {
		return n.noLeaderError()
	}
	res, err := n.fwd.forward(ctx, leader, nil)
	if err != nil {
		return err
	}
	if !v.waitApplied(ctx, res.Index) {
		return api.Errorf(api.CodeUnavailable, "this node did not catch up with the leader's index %d in time", res.Index)
	}
	return nil
}

// readyVoter returns the node's Raft side once its state machine has caught
// up with the cluster, so that a node just restarted never serves the state
// of before its log was replayed.
func (n *Node) readyVoter() (*voter, error) {
	v, err := n.voter()
	if err != nil {
		return nil, err
	}
	// The read methods take no context: the wait is bounded by
	// Config.LeaderWait alone.
	n.awaitCond(context.Background(), v.ready.Load)
	return v, v.readyErr()
}

// errProxy answers reads on a proxy, whose HTTP requests are forwarded to a
// voter before they reach these methods.
var errProxy = api.Errorf(api.CodeUnavailable, "this node is a proxy and holds no registry")

// Services lists the service names.
func (n *Node) Services() []string {
	if v := n.v.Load(); v != nil {
		return v.fsm.Services()
	}
	return nil
}

// Instances lists a service's instances in order of index.
func (n *Node) Instances(service string) ([]*api.Instance, error) {
	v, err := n.readyVoter()
	if err != nil {
		return nil, err
	}
	return v.fsm.Instances(service)
}

// Leader returns a service's leader (nil for none).
func (n *Node) Leader(service string) (*api.Instance, error) {
	v, err := n.readyVoter()
	if err != nil {
		return nil, err
	}
	return v.fsm.Leader(service)
}

// ServiceMeta returns a service's meta (nil for none).
func (n *Node) ServiceMeta(service string) (*api.ServiceMeta, error) {
	v, err := n.readyVoter()
	if err != nil {
		return nil, err
	}
	return v.fsm.ServiceMeta(service)
}

// AppliedIndex is the index of the last entry the state machine applied (0
// on a proxy).
func (n *Node) AppliedIndex() uint64 {
	if v := n.v.Load(); v != nil {
		return v.fsm.AppliedIndex()
	}
	return 0
}

// Subscribe opens a stream of one service's events; see httpapi.Backend.
func (n *Node) Subscribe(service string, kinds api.KindMask, lastEventID uint64, resume bool) (api.Stream, error) {
	kinds |= api.Mask(api.EventCurrent, api.EventResync)
	v, err := n.readyVoter()
	if err != nil {
		return nil, err
	}
	var sub *Subscription
	v.fsm.CurrentState(service, kinds, func(prelude []api.Event) {
		sub = n.hub.add(service, kinds, func(since func(uint64) ([]api.Event, bool)) []api.Event {
			if !resume {
				return prelude
			}
			if missed, ok := since(lastEventID); ok {
				return missed
			}
			idx := uint64(0)
			if len(prelude) > 0 {
				idx = prelude[0].Index
			}
			return append([]api.Event{{Service: service, Kind: api.EventResync, Index: idx}}, prelude...)
		})
	})
	return sub, nil
}

// Status describes the node.
func (n *Node) Status() api.Status {
	st := api.Status{Role: "proxy", Addr: n.advertise, Leader: n.RaftLeader(), Version: version.Get()}
	if v := n.v.Load(); v != nil {
		st.Role = roleName(v.raft.State())
		st.AppliedIndex = v.fsm.AppliedIndex()
	}
	st.Healthy = st.Leader != ""
	return st
}

func roleName(s raft.RaftState) string {
	switch s {
	case raft.Leader:
		return "leader"
	case raft.Follower:
		return "follower"
	case raft.Candidate:
		return "candidate"
	}
	return "shutdown"
}
