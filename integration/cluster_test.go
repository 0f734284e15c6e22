package integration

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/discoverd/discoverd/api"
)

func TestClusterWritesThroughFollowerAndProxyAreVisibleEverywhere(t *testing.T) {
	c := NewCluster(t, 3, 1)
	leader := c.WaitForLeader(5 * time.Second)
	follower := c.Followers()[0]
	proxy := c.Proxies()[0]

	mustDo(t, "PUT", follower.URL()+"/services/web", api.ServiceConfig{})
	mustDo(t, "PUT", follower.URL()+"/services/web/instances/via-follower", api.Instance{Addr: "10.0.0.1:80", Proto: "http"})
	// A write answered by a follower has been applied there: read-your-writes.
	if got := ids(instances(t, follower.URL(), "web")); got != "via-follower" {
		t.Fatalf("follower sees %q right after its write", got)
	}
	if code, b := register(t, proxy.URL(), "web", "via-proxy", "10.0.0.2:80"); code != 200 {
		t.Fatalf("register through proxy: %d %s", code, b)
	}
	for _, nd := range c.Nodes {
		WaitFor(t, 2*time.Second, "instances on "+nd.Addr, func() bool {
			code, b := do(t, "GET", nd.URL()+"/services/web/instances", nil)
			var got []*api.Instance
			return code == 200 && json.Unmarshal(b, &got) == nil && ids(got) == "via-follower,via-proxy"
		})
	}
	// Every voter answers with the leader's applied index once caught up.
	if code, _ := do(t, "GET", leader.URL()+"/services/web/instances?consistent=true", nil); code != 200 {
		t.Fatalf("consistent read on leader: %d", code)
	}
	if code, b := do(t, "GET", follower.URL()+"/services/web/instances?consistent=true", nil); code != 200 {
		t.Fatalf("consistent read on follower: %d %s", code, b)
	}
}

func TestClusterSSEThroughProxy(t *testing.T) {
	c := NewCluster(t, 3, 1)
	proxy := c.Proxies()[0]
	mustDo(t, "PUT", proxy.URL()+"/services/web", api.ServiceConfig{})
	if code, b := register(t, proxy.URL(), "web", "a", "10.0.0.1:80"); code != 200 {
		t.Fatalf("register through the proxy right after creating the service through it: %d %s (leader %s, proxy's voters %v)",
			code, b, c.Leader().Addr, proxy.Node().Voters())
	}
	s := openSSE(t, proxy.URL()+"/services/web")
	for _, want := range []api.EventKind{api.EventUp, api.EventLeader, api.EventCurrent} {
		if ev := s.next(t, 2*time.Second); ev.Kind != want {
			t.Fatalf("prelude event %+v, want kind %s", ev, want)
		}
	}
	if code, b := register(t, c.Followers()[0].URL(), "web", "b", "10.0.0.2:80"); code != 200 {
		t.Fatalf("%d %s", code, b)
	}
	ev := s.next(t, 2*time.Second)
	if ev.Kind != api.EventUp || ev.Instance == nil || ev.Instance.ID != "b" || ev.Index == 0 {
		t.Fatalf("live event through proxy: %+v, want up of b", ev)
	}
}

// heartbeater keeps instances alive through a list of nodes, each instance
// on its own goroutine, moving to the next node on failure. It counts
// failures and records when each acknowledged heartbeat was sent and
// answered, so that a test can tell an instance the server should have kept
// (its heartbeats never left it a TTL without one) from one whose heartbeats
// this busy machine held up.
type heartbeater struct {
	urls    []string
	service string
	ids     []string
	stop    chan struct{}
	done    sync.WaitGroup
	fails   atomic.Int64

	mu       sync.Mutex
	attempts map[string][]hbAttempt
}

// hbAttempt is one heartbeat sent. An acknowledged one (code 200) was taken
// by the server at some moment between sent and answered.
type hbAttempt struct {
	url            string
	code           int
	body           string
	sent, answered time.Time
}

func startHeartbeats(t *testing.T, urls []string, service string, ids []string, every time.Duration) *heartbeater {
	h := &heartbeater{urls: urls, service: service, ids: ids, stop: make(chan struct{}), attempts: make(map[string][]hbAttempt)}
	for n, id := range ids {
		h.done.Add(1)
		go func() {
			defer h.done.Done()
			i := 0
			tick := time.NewTicker(every)
			defer tick.Stop()
			for {
				for try := 0; try < len(urls); try++ {
					sent, url := time.Now(), urls[i%len(urls)]
					code, body := register(t, url, service, id, fmt.Sprintf("10.1.0.%d:80", n+1))
					a := hbAttempt{url: url, code: code, sent: sent, answered: time.Now()}
					if code != http.StatusOK {
						a.body = string(body)
					}
					h.mu.Lock()
					h.attempts[id] = append(h.attempts[id], a)
					h.mu.Unlock()
					if code == 200 {
						break
					}
					h.fails.Add(1)
					i++
				}
				select {
				case <-h.stop:
					return
				case <-tick.C:
				}
			}
		}()
	}
	t.Cleanup(h.Stop)
	return h
}

// longestGap is the longest time up to now that the server may have gone
// without a heartbeat of id since its first acknowledged one: from the
// sending of one acknowledged heartbeat to the answer to the next (or to
// now). While it stays under the TTL, the instance was alive all along as
// far as any server could know, and expiring it was the server's fault.
func (h *heartbeater) longestGap(id string) time.Duration {
	now := time.Now()
	h.mu.Lock()
	defer h.mu.Unlock()
	var longest time.Duration
	var last *hbAttempt
	for k := range h.attempts[id] {
		a := &h.attempts[id][k]
		if a.code != http.StatusOK {
			continue
		}
		if last != nil {
			longest = max(longest, a.answered.Sub(last.sent))
		}
		last = a
	}
	if last == nil {
		return 0
	}
	return max(longest, now.Sub(last.sent))
}

// history lists id's heartbeats, for a failure message.
func (h *heartbeater) history(id string) string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var b strings.Builder
	for _, a := range h.attempts[id] {
		fmt.Fprintf(&b, "\n  %s %s -> %d in %v %s", a.sent.Format("15:04:05.000"), a.url, a.code, a.answered.Sub(a.sent).Round(time.Millisecond), a.body)
	}
	return b.String()
}

func (h *heartbeater) Stop() {
	select {
	case <-h.stop:
	default:
		close(h.stop)
	}
	h.done.Wait()
}

func TestClusterLeaderKillFailsOverWithoutExpiringLiveInstances(t *testing.T) {
	c := NewCluster(t, 3, 1, WithTTL(time.Second, 100*time.Millisecond))
	leader := c.WaitForLeader(5 * time.Second)
	proxy := c.Proxies()[0]
	mustDo(t, "PUT", proxy.URL()+"/services/web", api.ServiceConfig{})

	var urls []string
	for _, nd := range c.Nodes {
		if nd != leader {
			urls = append(urls, nd.URL())
		}
	}
	live := []string{"live-1", "live-2", "live-3"}
	hb := startHeartbeats(t, urls, "web", live, 200*time.Millisecond)
	WaitFor(t, 3*time.Second, "live instances registered", func() bool {
		return len(instances(t, proxy.URL(), "web")) == 3
	})
	watch := openSSE(t, c.Followers()[0].URL()+"/services/web/instances")

	// Let every voter's heartbeat feed run for more than a TTL, so the next
	// leader can trust it.
	c.WaitForFeeds(c.TTL)
	c.Kill(leader.Index)
	killed := time.Now()
	// How fast a cluster fails over is not this test's concern (nor a thing
	// to time on a busy machine): it is that no live instance is expired
	// across it. The time is logged.
	newLeader := c.WaitForLeader(10 * time.Second)
	t.Logf("every running node knew the new leader %v after the old one stopped", time.Since(killed))
	if newLeader == leader {
		t.Fatal("killed node still leads")
	}
	// Registrations through the survivors and the proxy keep working.
	for _, u := range append(urls, proxy.URL()) {
		WaitFor(t, 3*time.Second, "register through "+u, func() bool {
			code, _ := register(t, u, "web", "after-"+u[len(u)-5:], "10.2.0.1:80")
			return code == 200
		})
	}
	// Run two TTLs past the failover: no live instance may go down.
	deadline := time.After(2 * c.TTL)
	for done := false; !done; {
		select {
		case ev := <-watch.events:
			if ev.Kind == api.EventDown {
				for _, id := range live {
					if ev.Instance.ID != id {
						continue
					}
					gap := hb.longestGap(id)
					if gap < c.TTL {
						t.Fatalf("instance %s kept heartbeating (never more than %v between heartbeats, TTL %v) but was expired at index %d; its heartbeats:%s", id, gap, c.TTL, ev.Index, hb.history(id))
					}
					t.Logf("instance %s expired at index %d after its heartbeats left a gap of %v (TTL %v); its heartbeats:%s", id, ev.Index, gap, c.TTL, hb.history(id))
				}
			}
		case <-deadline:
			done = true
		}
	}
	hb.Stop()
	got := instances(t, proxy.URL(), "web")
	for _, id := range live {
		found := false
		for _, inst := range got {
			found = found || inst.ID == id
		}
		if !found {
			t.Fatalf("live instance %s missing after failover: %s", id, ids(got))
		}
	}
}

func TestClusterExpiryAfterFailoverWithinTTLPlus3s(t *testing.T) {
	c := NewCluster(t, 3, 0, WithTTL(time.Second, 100*time.Millisecond))
	leader := c.WaitForLeader(5 * time.Second)
	f := c.Followers()
	mustDo(t, "PUT", f[0].URL()+"/services/web", api.ServiceConfig{})
	if code, b := register(t, f[0].URL(), "web", "doomed", "10.0.0.9:80"); code != 200 {
		t.Fatalf("%d %s", code, b)
	}
	watch := openSSE(t, f[1].URL()+"/services/web/instances")
	watch.waitEvent(t, 2*time.Second, func(ev api.Event) bool { return ev.Kind == api.EventCurrent })

	// The instance sends its last heartbeat, then the leader dies.
	if code, _ := register(t, f[0].URL(), "web", "doomed", "10.0.0.9:80"); code != 200 {
		t.Fatal("last heartbeat failed")
	}
	last := time.Now()
	c.Kill(leader.Index)
	ev := watch.waitEvent(t, c.TTL+4*time.Second, func(ev api.Event) bool {
		return ev.Kind == api.EventDown && ev.Instance.ID == "doomed"
	})
	if took := time.Since(last); took > c.TTL+3*time.Second {
		t.Fatalf("down seen %v after the last heartbeat, want within TTL+3s = %v (event %+v)", took, c.TTL+3*time.Second, ev)
	}
}

// A voter that has just restarted acknowledges heartbeats before its NATS
// routes to the other voters are up, and a voter may run without NATS at
// all; either way each heartbeat it acknowledges must reach the leader, which
// alone expires instances.
func TestClusterRestartedFollowerDeliversHeartbeatsToLeader(t *testing.T) {
	for _, tc := range []struct {
		name string
		nats bool
	}{
		{"over the nats feed once it is up", true},
		{"over http without nats", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := NewCluster(t, 3, 0, WithTTL(600*time.Millisecond, 50*time.Millisecond))
			leader := c.WaitForLeader(5 * time.Second)
			f := c.Followers()
			restarted, other := f[0], f[1]
			mustDo(t, "PUT", leader.URL()+"/services/web", api.ServiceConfig{})
			watch := openSSE(t, leader.URL()+"/services/web/instances")
			watch.waitEvent(t, 2*time.Second, func(ev api.Event) bool { return ev.Kind == api.EventCurrent })

			c.Kill(restarted.Index)
			bridge := startHeartbeats(t, []string{other.URL()}, "web", []string{"pinned"}, 100*time.Millisecond)
			watch.waitEvent(t, 2*time.Second, func(ev api.Event) bool {
				return ev.Kind == api.EventUp && ev.Instance.ID == "pinned"
			})
			restarted.cfg.NATS = tc.nats
			c.Restart(restarted.Index)
			// From the first heartbeat the restarted voter acknowledges, the
			// instance is kept alive through it alone.
			WaitFor(t, 10*time.Second, "the restarted voter acknowledging a heartbeat", func() bool {
				code, _ := register(t, restarted.URL(), "web", "pinned", "10.1.0.1:80")
				return code == 200
			})
			bridge.Stop()
			pinned := startHeartbeats(t, []string{restarted.URL()}, "web", []string{"pinned"}, 100*time.Millisecond)
			deadline := time.After(5 * c.TTL)
			for done := false; !done; {
				select {
				case ev := <-watch.events:
					if ev.Kind == api.EventDown && ev.Instance.ID == "pinned" {
						if gap := pinned.longestGap("pinned"); gap < c.TTL {
							t.Fatalf("instance heartbeating through the restarted voter (never more than %v between heartbeats, TTL %v) was expired at index %d; its heartbeats:%s", gap, c.TTL, ev.Index, pinned.history("pinned"))
						}
						// Held up by this machine, or refused by the voter,
						// which the check of refusals below reports.
						t.Logf("the heartbeats through the restarted voter left a gap of at least a TTL (%v) and the instance was expired at index %d; its heartbeats:%s", c.TTL, ev.Index, pinned.history("pinned"))
					}
				case <-deadline:
					done = true
				}
			}
			pinned.Stop()
			if n := pinned.fails.Load(); n != 0 {
				t.Fatalf("the restarted voter refused %d heartbeats after it had acknowledged one; its heartbeats:%s", n, pinned.history("pinned"))
			}
		})
	}
}

func TestClusterMinorityAnswers503AndLosesNoAckedWrite(t *testing.T) {
	c := NewCluster(t, 3, 0, WithTTL(2*time.Second, 100*time.Millisecond))
	c.WaitForLeader(5 * time.Second)
	leader := c.Leader()
	mustDo(t, "PUT", leader.URL()+"/services/web", api.ServiceConfig{})
	if code, b := register(t, leader.URL(), "web", "before", "10.0.0.1:80"); code != 200 {
		t.Fatalf("%d %s", code, b)
	}
	survivor := c.Followers()[0]
	WaitFor(t, 2*time.Second, "survivor caught up", func() bool {
		code, b := do(t, "GET", survivor.URL()+"/services/web/instances", nil)
		return code == 200 && strings.Contains(string(b), `"before"`)
	})
	// Leave the survivor alone: it can reach no leader.
	for _, nd := range c.Nodes {
		if nd != survivor {
			c.Kill(nd.Index)
		}
	}
	acked := map[string]bool{"before": true}
	WaitFor(t, 3*time.Second, "survivor refuses heartbeats", func() bool {
		code, _ := register(t, survivor.URL(), "web", "before", "10.0.0.1:80")
		return code == http.StatusServiceUnavailable
	})
	for i := 0; i < 5; i++ {
		id := fmt.Sprintf("during-%d", i)
		code, b := register(t, survivor.URL(), "web", id, "10.0.0.2:80")
		if code == 200 {
			acked[id] = true
			continue
		}
		var e api.Error
		if code != http.StatusServiceUnavailable || json.Unmarshal(b, &e) != nil || e.Code != api.CodeUnavailable || !e.Retry {
			t.Fatalf("write on a minority node: %d %s, want 503 service_unavailable with retry", code, b)
		}
	}
	if len(acked) != 1 {
		t.Fatalf("minority node acknowledged writes: %v", acked)
	}
	// Heal: every acknowledged write is there.
	for _, nd := range c.Nodes {
		if nd != survivor {
			c.Restart(nd.Index)
		}
	}
	c.WaitForLeader(10 * time.Second)
	WaitFor(t, 5*time.Second, "acked writes after heal", func() bool {
		code, b := do(t, "GET", survivor.URL()+"/services/web/instances?consistent=true", nil)
		if code != 200 {
			return false
		}
		var got []*api.Instance
		json.Unmarshal(b, &got)
		for id := range acked {
			found := false
			for _, i := range got {
				found = found || i.ID == id
			}
			if !found {
				return false
			}
		}
		return true
	})
}

func TestClusterRestartAllVotersKeepsRegistry(t *testing.T) {
	c := NewCluster(t, 3, 0, WithTTL(10*time.Second, time.Second))
	l := c.WaitForLeader(5 * time.Second)
	mustDo(t, "PUT", l.URL()+"/services/web", api.ServiceConfig{LeaderType: api.LeaderTypeManual})
	for i := 0; i < 20; i++ {
		mustDo(t, "PUT", l.URL()+"/services/web/instances/"+fmt.Sprintf("i%02d", i), api.Instance{Addr: fmt.Sprintf("10.0.0.%d:80", i+1), Proto: "http"})
	}
	mustDo(t, "PUT", l.URL()+"/services/web/leader", api.SetLeaderRequest{ID: "i07"})
	mustDo(t, "PUT", l.URL()+"/services/web/meta", api.ServiceMeta{Data: json.RawMessage(`{"v":1}`)})
	before := instances(t, l.URL(), "web")
	for i := range c.Nodes {
		c.Kill(i)
	}
	// Starting a node does not wait for an election, so these start
	// together as far as Raft can tell.
	for i := range c.Nodes {
		c.Restart(i)
	}
	l = c.WaitForLeader(10 * time.Second)
	for _, nd := range c.Nodes {
		WaitFor(t, 5*time.Second, "registry on "+nd.Addr, func() bool {
			code, b := do(t, "GET", nd.URL()+"/services/web/instances", nil)
			var got []*api.Instance
			return code == 200 && json.Unmarshal(b, &got) == nil && ids(got) == ids(before)
		})
		var leader api.Instance
		json.Unmarshal(mustDo(t, "GET", nd.URL()+"/services/web/leader", nil), &leader)
		if leader.ID != "i07" {
			t.Fatalf("manual leader on %s after restart: %q, want i07", nd.Addr, leader.ID)
		}
		var meta api.ServiceMeta
		json.Unmarshal(mustDo(t, "GET", nd.URL()+"/services/web/meta", nil), &meta)
		if string(meta.Data) != `{"v":1}` {
			t.Fatalf("meta on %s after restart: %s", nd.Addr, meta.Data)
		}
	}
}

func TestClusterPromoteAndDemote(t *testing.T) {
	c := NewCluster(t, 1, 2)
	leader := c.WaitForLeader(5 * time.Second)
	p1, p2 := c.Proxies()[0], c.Proxies()[1]
	mustDo(t, "PUT", p1.URL()+"/services/web", api.ServiceConfig{})
	if code, b := register(t, p1.URL(), "web", "a", "10.0.0.1:80"); code != 200 {
		t.Fatalf("%d %s", code, b)
	}

	// Promote into a one-voter cluster: two voters must still make progress.
	mustDo(t, "POST", p1.URL()+"/raft/promote", nil)
	if p1.Node().IsProxy() {
		t.Fatal("promoted node is still a proxy")
	}
	var peers []string
	json.Unmarshal(mustDo(t, "GET", leader.URL()+"/raft/peers", nil), &peers)
	if len(peers) != 2 {
		t.Fatalf("peers after promote: %v", peers)
	}
	if code, b := register(t, p1.URL(), "web", "b", "10.0.0.2:80"); code != 200 {
		t.Fatalf("write after promote into a one-voter cluster: %d %s", code, b)
	}
	if got := ids(instances(t, p1.URL(), "web")); got != "a,b" {
		t.Fatalf("promoted node serves %q", got)
	}
	mustDo(t, "POST", p2.URL()+"/raft/promote", nil)
	json.Unmarshal(mustDo(t, "GET", p2.URL()+"/raft/peers", nil), &peers)
	if len(peers) != 3 {
		t.Fatalf("peers after second promote: %v", peers)
	}

	// Demote the original voter: the other two carry on.
	mustDo(t, "POST", leader.URL()+"/raft/demote", nil)
	if !leader.Node().IsProxy() {
		t.Fatal("demoted node is not a proxy")
	}
	WaitFor(t, 5*time.Second, "a leader among the remaining voters", func() bool {
		return p1.Node().IsLeader() || p2.Node().IsLeader()
	})
	json.Unmarshal(mustDo(t, "GET", p1.URL()+"/raft/peers", nil), &peers)
	if len(peers) != 2 {
		t.Fatalf("peers after demote: %v", peers)
	}
	// The demoted node now proxies.
	WaitFor(t, 5*time.Second, "write through the demoted node", func() bool {
		code, _ := register(t, leader.URL(), "web", "c", "10.0.0.3:80")
		return code == 200
	})
	if got := ids(instances(t, leader.URL(), "web")); got != "a,b,c" {
		t.Fatalf("demoted node (now proxy) serves %q", got)
	}
	// The last voter cannot be demoted.
	mustDo(t, "POST", p2.URL()+"/raft/demote", nil)
	l := c.WaitForLeader(5 * time.Second)
	if code, b := do(t, "POST", l.URL()+"/raft/demote", nil); code != http.StatusBadRequest {
		t.Fatalf("demoting the last voter: %d %s, want 400", code, b)
	}

}
