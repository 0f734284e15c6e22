//go:build compose

package integration

import (
	"testing"
	"time"

	"github.com/discoverd/discoverd/integration/history"
)

var writeKinds = []history.Kind{history.Register, history.Deregister, history.SetMeta}

// waitNewLeader waits for a Raft leader other than old, and says how long
// it took.
func waitNewLeader(t *testing.T, c *composeCluster, old *composeNode, timeout time.Duration) (*composeNode, time.Duration) {
	t.Helper()
	start := time.Now()
	for {
		if l := c.Leader(); l != nil && l != old {
			if st, err := l.status(); err == nil && st.Role == "leader" {
				return l, time.Since(start)
			}
		}
		if time.Since(start) > timeout {
			t.Fatalf("no new raft leader within %v", timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// 1. Kill the Raft leader during load; restart it.
func TestComposeKillLeader(t *testing.T) {
	c := newComposeCluster(t)
	w := startComposeWorkload(t, c)
	w.run(4 * time.Second)
	old := c.WaitLeader(10 * time.Second)
	c.Kill(old)
	killed := time.Now()
	nl, took := waitNewLeader(t, c, old, 15*time.Second)
	c.note("new raft leader %s after %v", nl.Name, took.Round(10*time.Millisecond))
	// Longer than a TTL without the old leader: its instances' heartbeats
	// must reach the new one.
	w.run(composeTTL + 3*time.Second - time.Since(killed))
	c.Start(old)
	w.Healed()
	w.Finish(nil)
}

// 2. Cut the Raft leader off from the other two voters (it stays reachable
// by its clients: a minority leader) for 20 s; heal.
func TestComposePartitionLeader(t *testing.T) {
	c := newComposeCluster(t)
	w := startComposeWorkload(t, c)
	w.run(4 * time.Second)
	old := c.WaitLeader(10 * time.Second)
	c.Isolate(old)
	cut := time.Now()
	nl, took := waitNewLeader(t, c, old, 15*time.Second)
	c.note("majority elected %s after %v", nl.Name, took.Round(10*time.Millisecond))
	w.run(20*time.Second - time.Since(cut))
	healed := c.Reconnect(old)
	w.Healed()
	w.Finish(func(r *composeReport) {
		// The minority side acknowledges nothing once it has noticed (its
		// leader lease and the election timeout are well under 2 s).
		from := cut.Add(2 * time.Second)
		for _, op := range r.opsBy(old, from, healed, writeKinds, history.OK) {
			r.problem("the cut-off old leader %s acknowledged a write during the partition: %s", old.Name, &op)
		}
		for _, op := range r.opsBy(old, from, healed, []history.Kind{history.ReadInstances, history.GetMeta}, history.OK) {
			r.problem("the cut-off old leader %s answered a consistent read during the partition: %s", old.Name, &op)
		}
		refused := len(r.opsBy(old, from, healed, writeKinds, history.Unknown)) + len(r.opsBy(old, from, healed, writeKinds, history.Failed))
		r.stat("the cut-off old leader refused %d writes and heartbeats during the partition", refused)
	})
}

// 3. Pause a follower for 30 s (longer than the TTL); resume.
func TestComposePauseFollower(t *testing.T) {
	c := newComposeCluster(t)
	w := startComposeWorkload(t, c)
	w.run(4 * time.Second)
	// The follower the clients use most, so that they must fail over.
	f := w.busiest(c.Followers(), 3*time.Second)
	c.Pause(f)
	w.run(30 * time.Second)
	c.Unpause(f)
	w.Healed()
	w.Finish(nil)
}

// 4. Kill a proxy while clients use it; the clients fail over.
func TestComposeKillProxy(t *testing.T) {
	c := newComposeCluster(t)
	w := startComposeWorkload(t, c)
	w.run(4 * time.Second)
	p, other := c.Proxies()[0], c.Proxies()[1]
	c.Kill(p)
	killed := time.Now()
	w.run(composeTTL + 5*time.Second)
	c.Start(p)
	started := time.Now()
	w.Healed()
	w.Finish(func(r *composeReport) {
		// The client that knows only the proxies went on through the other.
		n := len(r.opsBy(other, killed, started, []history.Kind{history.Register}, history.OK))
		if n == 0 {
			r.problem("no heartbeat went through %s while %s was down: the proxy-only client did not fail over", other.Name, p.Name)
		}
		r.stat("%d heartbeats went through %s while %s was down", n, other.Name, p.Name)
	})
}

// 5. Kill all three voters at once and start them again: the registry is
// whole.
func TestComposeKillAllVoters(t *testing.T) {
	c := newComposeCluster(t)
	w := startComposeWorkload(t, c)
	w.run(5 * time.Second)
	c.Kill(c.Voters()...)
	killed := time.Now()
	w.run(2 * time.Second)
	c.Start(c.Voters()...)
	w.Healed()
	nl := c.WaitLeader(30 * time.Second)
	c.note("raft leader %s", nl.Name)
	w.Finish(func(r *composeReport) {
		// Whole: every instance registered before the crash and still
		// heartbeating is there with its index, whatever its heartbeats' gap
		// during the outage (a restarted leader gives every instance a TTL).
		for _, in := range w.instances {
			if in.closed || in.overNATS {
				continue
			}
			first := firstIndex(r.ops, in.service, in.id)
			var acked *history.Op
			for i := range r.ops {
				if op := &r.ops[i]; op.Kind == history.Register && op.Service == in.service && op.Instance == in.id && op.Outcome == history.OK && op.Return.Before(killed) {
					acked = op
					break
				}
			}
			if acked == nil {
				continue
			}
			v, ok := w.final[in.service]
			if !ok {
				continue
			}
			got, present := v.Instances[in.id]
			switch {
			case !present:
				r.problem("instance %s/%s, acknowledged before the crash and heartbeating since, is gone after the restart", in.service, in.id)
			case got.Index != first:
				r.problem("instance %s/%s was registered anew after the restart (index %d, was %d): it had expired", in.service, in.id, got.Index, first)
			}
		}
	})
}

// 6. Restart every node, one at a time, under load: no instance that kept
// heartbeating is expired.
func TestComposeRollingRestart(t *testing.T) {
	c := newComposeCluster(t)
	w := startComposeWorkload(t, c)
	w.run(4 * time.Second)
	order := append(c.Followers(), c.WaitLeader(10*time.Second))
	order = append(order, c.Proxies()...)
	for _, n := range order {
		c.Restart(n)
		c.waitNode(n, 30*time.Second)
		l := c.WaitLeader(15 * time.Second)
		c.note("%s serves again; raft leader %s", n.Name, l.Name)
		w.run(2 * time.Second)
	}
	w.Healed()
	w.Finish(nil)
}
