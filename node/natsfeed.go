package node

import (
	"context"
	"net/http"
	"net/url"
	"runtime"
	"sync"
	"time"

	"github.com/discoverd/discoverd/api"
	"github.com/discoverd/discoverd/bus"
	"github.com/nats-io/nats.go"
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

// QuickHeartbeat takes, on the subscriber's receiving goroutine, a heartbeat
// of an instance already registered unchanged: it records the time and, on
// the leader, answers. Whatever may wait or write (a registration, a leader
// out of step) it leaves to Heartbeat on a worker. It does what Heartbeat
// does for such a heartbeat, without the context and the goroutine switch.
// A follower drops the heartbeat of an instance it does not know, as
// Heartbeat does.
func (b busHeartbeats) QuickHeartbeat(service string, inst *api.Instance) (bool, error) {
	taken, err := b.quick(service, inst.ID, inst.SameRegistration)
	if !taken && b.follows() {
		return true, bus.ErrNoReply
	}
	return taken, err
}

// QuickHeartbeatUnchanged is QuickHeartbeat before the heartbeat is decoded:
// same compares it with the registered instance.
func (b busHeartbeats) QuickHeartbeatUnchanged(service, id string, same func(*api.Instance) bool) (bool, error) {
	return b.quick(service, id, same)
}

// quick records the heartbeat of instance id of service if it is registered
// and same says the heartbeat carries its registration.
func (b busHeartbeats) quick(service, id string, same func(*api.Instance) bool) (bool, error) {
	v := b.n.v.Load()
	if v == nil {
		return true, bus.ErrNoReply
	}
	leader := v.isLeader()
	// A leader is in contact with itself; out of step, Heartbeat says why.
	if leader && v.inStepErr() != nil {
		return false, nil
	}
	name, stored, err := v.fsm.Lookup(service, id)
	if err != nil || stored == nil || !same(stored) {
		return false, nil
	}
	// The state machine's strings: the table keeps none of the message's.
	b.n.heartbeats.touch(hbKey{name, stored.ID}, nowNanos())
	if !leader {
		return true, bus.ErrNoReply
	}
	return true, nil
}

// follows reports whether this node is a voter that does not lead.
func (b busHeartbeats) follows() bool {
	v := b.n.v.Load()
	return v != nil && !v.isLeader()
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

// shareHeartbeat passes a heartbeat that reached the leader over HTTP on to
// the other voters over NATS, so that every voter's heartbeat table hears it
// and any of them can take over expiry at once. A single voter has no one to
// tell.
func (n *Node) shareHeartbeat(service string, inst *api.Instance, fromBus bool) {
	if fromBus || n.nc == nil || !n.multiVoter.Load() {
		return
	}
	n.sendHeartbeat(context.Background(), service, inst, false)
}

// sendHeartbeat sends inst on its service's heartbeat subject, encoded in a
// pooled buffer (nats.go copies the payload before Publish and Request
// return): published, or with await a request whose answer is returned.
func (n *Node) sendHeartbeat(ctx context.Context, service string, inst *api.Instance, await bool) (*nats.Msg, error) {
	bp := hbBufs.Get().(*[]byte)
	defer hbBufs.Put(bp)
	*bp = api.AppendInstance((*bp)[:0], inst)
	if !await {
		return nil, n.nc.Publish(bus.HeartbeatSubject(service), *bp)
	}
	return n.nc.RequestWithContext(ctx, bus.HeartbeatSubject(service), *bp)
}

// hbBufs holds the buffers heartbeats are encoded in to be sent on NATS.
var hbBufs = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

// feedConfirmation is a Raft term and a connection of the NATS feed (its
// feedSince) in which the leader answered a heartbeat this follower relayed
// over NATS: the leader's heartbeat subscription is known to reach this
// node's NATS server through the routes.
type feedConfirmation struct {
	term      uint64
	feedSince int64
}

// feedProbeTimeout bounds the wait for the leader's answer to a heartbeat
// relayed over NATS before the follower falls back to HTTP.
const feedProbeTimeout = 500 * time.Millisecond

// relayHeartbeat makes sure that a heartbeat a follower takes over HTTP
// reaches the leader, which alone expires instances, before the follower
// acknowledges it. Once the leader has answered one relayed heartbeat over
// this node's NATS routes in the current term, later ones are published
// without waiting, as the leader shares its own. Until then (a voter that
// just started, or just regained its routes, or a new term) each heartbeat
// is a NATS request the leader answers, and if the feed is not connected or
// the leader does not answer, it is forwarded to the leader over HTTP: a
// fire-and-forget publish before the routes and their interest are set up
// would be lost, and the leader would expire an instance whose heartbeats
// were all acknowledged.
func (n *Node) relayHeartbeat(ctx context.Context, v *voter, service string, inst *api.Instance) error {
	leader, _ := v.raft.LeaderWithID()
	if leader == "" {
		return n.noLeaderError()
	}
	term := v.raft.CurrentTerm()
	feed := n.feedSince.Load()
	if n.nc != nil && feed != 0 {
		if c := n.feedConfirmed.Load(); c != nil && c.term == term && c.feedSince == feed {
			if _, err := n.sendHeartbeat(ctx, service, inst, false); err == nil {
				return nil
			}
		} else {
			rctx, cancel := context.WithTimeout(ctx, feedProbeTimeout)
			msg, err := n.sendHeartbeat(rctx, service, inst, true)
			cancel()
			if err == nil {
				if err := api.DecodeHeartbeatAnswer(msg.Data); err != nil {
					return err
				}
				n.feedConfirmed.Store(&feedConfirmation{term: term, feedSince: feed})
				return nil
			}
			if ctx.Err() != nil {
				return api.Errorf(api.CodeUnavailable, "relaying the heartbeat to the leader: %v", ctx.Err())
			}
		}
	}
	// Not a pooled buffer: the HTTP transport may still read a request body
	// after Do returned.
	return n.fwd.do(ctx, http.MethodPut, string(leader), instancePath(service, inst.ID), api.AppendInstance(nil, inst), nil)
}

// instancePath is the HTTP API route of one instance.
func instancePath(service, id string) string {
	return "/services/" + url.PathEscape(service) + "/instances/" + url.PathEscape(id)
}

// HeartbeatFeedSince is when this voter's NATS feed last became connected to
// every other voter (the zero time while it is not, and on a single voter).
func (n *Node) HeartbeatFeedSince() time.Time {
	if ns := n.feedSince.Load(); ns != 0 {
		return time.Unix(0, ns)
	}
	return time.Time{}
}
