package node

import (
	"context"
	"encoding/json"
	"runtime"
	"time"

	"github.com/discoverd/discoverd/api"
	"github.com/discoverd/discoverd/bus"
)

// busHeartbeats takes the heartbeats that arrive over NATS. Every voter hears
// every heartbeat (each subscribes in a queue group of its own): the leader
// handles it as the HTTP API would, registering it when new or changed, and
// answers requests; a follower only records the time for an instance it
// already knows and stays silent, so each request gets one answer and each
// registration one Raft entry.
type busHeartbeats struct{ n *Node }

func (b busHeartbeats) Heartbeat(ctx context.Context, service string, inst *api.Instance) (*api.Instance, error) {
	v := b.n.v.Load()
	if v == nil {
		return nil, bus.ErrNoReply
	}
	if v.isLeader() {
		return b.n.heartbeat(ctx, service, inst, true)
	}
	if name, stored, err := v.fsm.Lookup(service, inst.ID); err == nil && stored != nil && stored.SameRegistration(inst) {
		b.n.heartbeats.touch(hbKey{name, stored.ID}, nowNanos())
	}
	return nil, bus.ErrNoReply
}

// subscribeHeartbeats starts the voter's NATS heartbeat feed.
func (n *Node) subscribeHeartbeats(v *voter) {
	if n.nc == nil {
		return
	}
	hs, err := bus.SubscribeHeartbeats(n.nc, "discoverd-heartbeats-"+n.advertise, runtime.GOMAXPROCS(0)*2, busHeartbeats{n}, n.log)
	if err != nil {
		n.log.Error().Err(err).Msg("subscribing to nats heartbeats")
		return
	}
	n.hbSubMu.Lock()
	n.hbSub = hs
	n.hbSubMu.Unlock()
}

func (n *Node) unsubscribeHeartbeats() {
	n.hbSubMu.Lock()
	hs := n.hbSub
	n.hbSub = nil
	n.hbSubMu.Unlock()
	if hs != nil {
		hs.Close()
	}
}

// shareHeartbeat passes a heartbeat that arrived over HTTP on to the other
// voters over NATS, so that every voter's heartbeat table hears it and any
// of them can take over expiry at once. A single voter has no one to tell.
func (n *Node) shareHeartbeat(service string, inst *api.Instance, fromBus bool) {
	if fromBus || n.nc == nil || !n.multiVoter.Load() {
		return
	}
	data, err := json.Marshal(inst)
	if err != nil {
		return
	}
	n.nc.Publish(bus.HeartbeatSubject(service), data)
}

// HeartbeatFeedSince is when this voter's NATS feed last became connected to
// every other voter (the zero time while it is not, and on a single voter).
func (n *Node) HeartbeatFeedSince() time.Time {
	if ns := n.feedSince.Load(); ns != 0 {
		return time.Unix(0, ns)
	}
	return time.Time{}
}
