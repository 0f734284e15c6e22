package node

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/discoverd/discoverd/api"
	"github.com/rs/zerolog"
)

// startNode starts a single voter whose instances live a minute without a
// heartbeat: on a busy machine, a test that measures no expiry must not
// lose an instance between two of its steps.
func startNode(t *testing.T, dir, addr string) *Node {
	return startNodeTTL(t, dir, addr, time.Minute)
}

func startNodeTTL(t *testing.T, dir, addr string, ttl time.Duration) *Node {
	t.Helper()
	n, err := New(Config{
		DataDir:             dir,
		Addr:                addr,
		InstanceTTL:         ttl,
		ExpiryCheckInterval: 50 * time.Millisecond,
		Log:                 zerolog.Nop(),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := waitIsLeader(ctx, n); err != nil {
		t.Fatal(err)
	}
	return n
}

func waitIsLeader(ctx context.Context, n *Node) error {
	for !n.IsLeader() || !n.Ready() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
	return nil
}

func instance(addr string) *api.Instance {
	inst := &api.Instance{Addr: addr, Proto: "http"}
	if err := api.PrepareInstance(inst, ""); err != nil {
		panic(err)
	}
	return inst
}

func TestSingleNodeLeadsWithinASecond(t *testing.T) {
	start := time.Now()
	n, err := New(Config{DataDir: t.TempDir(), Addr: "127.0.0.1:0", Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := waitIsLeader(ctx, n); err != nil {
		t.Fatalf("not leader %v after start: %v", time.Since(start), err)
	}
}

func TestHeartbeatOfUnchangedInstanceWritesNothing(t *testing.T) {
	n := startNode(t, t.TempDir(), "127.0.0.1:0")
	ctx := context.Background()
	if _, err := n.AddService(ctx, "web", api.ServiceConfig{}); err != nil {
		t.Fatal(err)
	}
	first, err := n.Heartbeat(ctx, "web", instance("10.0.0.1:80"))
	if err != nil {
		t.Fatal(err)
	}
	before := n.AppliedIndex()
	for i := 0; i < 100; i++ {
		got, err := n.Heartbeat(ctx, "web", instance("10.0.0.1:80"))
		if err != nil {
			t.Fatal(err)
		}
		if got.Index != first.Index {
			t.Fatalf("heartbeat changed the instance index from %d to %d", first.Index, got.Index)
		}
	}
	if after := n.AppliedIndex(); after != before {
		t.Fatalf("heartbeats of an unchanged instance moved the applied index from %d to %d", before, after)
	}
	if _, err := n.Heartbeat(ctx, "nope", instance("10.0.0.1:80")); !api.IsCode(err, api.CodeNotFound) {
		t.Fatalf("heartbeat to an unknown service: got %v, want object_not_found", err)
	}
}

func TestExpiryEmitsDownAndLeader(t *testing.T) {
	const ttl = 300 * time.Millisecond
	n := startNodeTTL(t, t.TempDir(), "127.0.0.1:0", ttl)
	// Each round expires a in a service of its own while b is kept alive.
	// A busy machine may hold b's heartbeats up for a TTL; then b's expiry
	// is no fault of the node's, and the round is run again.
	for round := 1; ; round++ {
		svc := fmt.Sprintf("web%d", round)
		starved, ok := expiryRound(t, n, svc, ttl)
		if ok {
			return
		}
		if round == 3 {
			t.Fatalf("b's heartbeats were held up for a TTL in %d rounds (last gap %v); this machine is too busy for the test", round, starved)
		}
		t.Logf("round %d: b's heartbeats left a gap of %v (TTL %v), so its expiry says nothing; again", round, starved, ttl)
	}
}

// expiryRound registers a and then b in svc and heartbeats only b. It
// fails the test unless a goes down and b becomes the leader, or b is
// expired although its heartbeats never left it a TTL without one; it
// reports false, with the gap, if b's heartbeats were held up for a TTL.
func expiryRound(t *testing.T, n *Node, svc string, ttl time.Duration) (time.Duration, bool) {
	t.Helper()
	ctx := context.Background()
	if _, err := n.AddService(ctx, svc, api.ServiceConfig{}); err != nil {
		t.Fatal(err)
	}
	a, _ := n.Heartbeat(ctx, svc, instance("10.0.0.1:80"))
	b, _ := n.Heartbeat(ctx, svc, instance("10.0.0.2:80"))
	sub, err := n.Subscribe(svc, api.AllKinds, 0, false)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	// gap is the longest time the node may have gone without a heartbeat of
	// b: from the start of one accepted heartbeat to the end of the next.
	var mu sync.Mutex
	lastSent, longest := time.Now(), time.Duration(0)
	gap := func() time.Duration {
		mu.Lock()
		defer mu.Unlock()
		return max(longest, time.Since(lastSent))
	}
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
			sent := time.Now()
			if _, err := n.Heartbeat(ctx, svc, instance("10.0.0.2:80")); err == nil {
				mu.Lock()
				longest = max(longest, time.Since(lastSent))
				lastSent = sent
				mu.Unlock()
			}
		}
	}()
	// The expiry itself is timed by the bench's detect workload; here a
	// deadline sized for a busy machine.
	deadline := time.After(ttl + 10*time.Second)
	var sawDown, sawLeader bool
	evc := events(sub)
	for !(sawDown && sawLeader) {
		select {
		case ev := <-evc:
			if ev.Kind == api.EventDown && ev.Instance.ID == b.ID {
				if g := gap(); g >= ttl {
					return g, false
				}
				t.Fatalf("expired %s although its heartbeats never left it %v without one (longest gap %v)", b.ID, ttl, gap())
			}
			if ev.Kind == api.EventDown {
				if ev.Instance.ID != a.ID {
					t.Fatalf("expired %s, want only %s", ev.Instance.ID, a.ID)
				}
				sawDown = true
			}
			if ev.Kind == api.EventLeader && sawDown {
				if ev.Instance == nil || ev.Instance.ID != b.ID {
					t.Fatalf("leader after expiry: %+v, want %s", ev.Instance, b.ID)
				}
				sawLeader = true
			}
		case <-deadline:
			t.Fatalf("no down+leader within TTL+10s: down=%v leader=%v", sawDown, sawLeader)
		}
	}
	return 0, true
}

func TestRestartRecoversState(t *testing.T) {
	dir := t.TempDir()
	n := startNode(t, dir, "127.0.0.1:0")
	addr := n.Addr()
	ctx := context.Background()
	n.AddService(ctx, "web", api.ServiceConfig{})
	inst, err := n.Heartbeat(ctx, "web", instance("10.0.0.1:80"))
	if err != nil {
		t.Fatal(err)
	}
	meta, err := n.SetServiceMeta(ctx, "web", &api.ServiceMeta{Data: []byte(`{"v":1}`)})
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	n2 := startNode(t, dir, addr)
	got, err := n2.Instances("web")
	if err != nil || len(got) != 1 || got[0].ID != inst.ID || got[0].Index != inst.Index {
		t.Fatalf("after restart instances = %v, %v; want [%v]", got, err, inst)
	}
	m, err := n2.ServiceMeta("web")
	if err != nil || m == nil || m.Index != meta.Index || string(m.Data) != `{"v":1}` {
		t.Fatalf("after restart meta = %+v, %v; want %+v", m, err, meta)
	}
}

func TestSlowSubscriberIsClosedNotBlocking(t *testing.T) {
	n := startNode(t, t.TempDir(), "127.0.0.1:0")
	ctx := context.Background()
	n.AddService(ctx, "web", api.ServiceConfig{})
	sub, err := n.Subscribe("web", api.AllKinds, 0, false)
	if err != nil {
		t.Fatal(err)
	}
	if got := sample(t, gather(t, n), "discoverd_event_streams"); got != 1 {
		t.Fatalf("discoverd_event_streams = %v with one subscriber", got)
	}
	// Never read: the writes below must all be acknowledged anyway.
	for i := 0; i < subscriberBuffer+50; i++ {
		if _, err := n.SetServiceMeta(ctx, "web", &api.ServiceMeta{Data: []byte(`1`), Index: metaIndex(n)}); err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
	}
	received := 0
	for range events(sub) {
		received++
	}
	if !api.IsCode(sub.Err(), api.CodeUnavailable) || sub.Err() != ErrSlowSubscriber {
		t.Fatalf("slow subscriber ended with %v, want ErrSlowSubscriber", sub.Err())
	}
	if received == 0 {
		t.Fatal("the slow subscriber got no events before it was closed")
	}
	fams := gather(t, n)
	if open, slow := sample(t, fams, "discoverd_event_streams"), sample(t, fams, "discoverd_event_streams_closed_slow_total"); open != 0 || slow != 1 {
		t.Fatalf("after the slow subscriber was closed: discoverd_event_streams = %v, discoverd_event_streams_closed_slow_total = %v; want 0, 1", open, slow)
	}
}

func metaIndex(n *Node) uint64 {
	m, _ := n.ServiceMeta("web")
	if m == nil {
		return 0
	}
	return m.Index
}

func TestReachableAnnouncesTheAdvertisedHostForWildcardBinds(t *testing.T) {
	n := &Node{advertise: "voter1:1111"}
	cases := map[string]string{
		"0.0.0.0:6222":   "voter1:6222",
		"[::]:6222":      "voter1:6222",
		":6222":          "voter1:6222",
		"127.0.0.1:6222": "127.0.0.1:6222",
		"10.1.2.3:4222":  "10.1.2.3:4222",
		"":               "",
	}
	for bound, want := range cases {
		if got := n.reachable(bound); got != want {
			t.Errorf("reachable(%q) = %q, want %q", bound, got, want)
		}
	}
}

// events yields a stream's events on a channel, closed when it ends.
func events(st api.Stream) <-chan api.Event {
	ch := make(chan api.Event)
	go func() {
		defer close(ch)
		var evs []api.Event
		for range st.Ready() {
			var open bool
			evs, open = st.Take(evs[:0])
			for _, ev := range evs {
				ch <- ev
			}
			if !open {
				return
			}
		}
	}()
	return ch
}

// TestRefusedHeartbeatIsStillRecorded: a heartbeat the node refuses because
// it is out of step (here: its step watcher has not confirmed it lately, as
// on a starved machine) still moves the instance's clock, so that the node
// never later expires an instance that kept heartbeating.
func TestRefusedHeartbeatIsStillRecorded(t *testing.T) {
	n := startNode(t, t.TempDir(), "127.0.0.1:0")
	ctx := context.Background()
	if _, err := n.AddService(ctx, "web", api.ServiceConfig{}); err != nil {
		t.Fatal(err)
	}
	inst := instance("10.0.0.1:80")
	if _, err := n.Heartbeat(ctx, "web", inst); err != nil {
		t.Fatal(err)
	}
	v, err := n.voter()
	if err != nil {
		t.Fatal(err)
	}
	key := hbKey{"web", inst.ID}
	// The step watcher puts the node back in step every few milliseconds:
	// try until one heartbeat met the node out of step.
	deadline := time.Now().Add(30 * time.Second)
	for {
		if time.Now().After(deadline) {
			t.Fatal("no heartbeat met the node out of step within 30s")
		}
		v.inStep.Store(false)
		sent := nowNanos()
		_, err := n.heartbeat(ctx, "web", inst, true)
		if err == nil {
			continue
		}
		if !errors.Is(err, errOutOfStep) {
			t.Fatalf("heartbeat out of step: %v, want %v", err, errOutOfStep)
		}
		seen, ok := n.heartbeats.lastSeen(key)
		if !ok || seen < sent {
			t.Fatalf("the refused heartbeat was not recorded: last seen %d, sent at %d", seen, sent)
		}
		return
	}
}
