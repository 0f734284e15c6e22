package client

import (
	"reflect"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/discoverd/discoverd/api"
	"github.com/discoverd/discoverd/bus"
)

func TestNATSSubjectsMatchServer(t *testing.T) {
	t.Parallel()
	if natsHeartbeatPrefix != bus.HeartbeatPrefix {
		t.Errorf("heartbeat prefix %q, server %q", natsHeartbeatPrefix, bus.HeartbeatPrefix)
	}
	if natsEventsPrefix != bus.EventsPrefix {
		t.Errorf("events prefix %q, server %q", natsEventsPrefix, bus.EventsPrefix)
	}
	if got, want := natsEventsPrefix+"web."+string(api.EventLeader), bus.EventSubject("web", api.EventLeader); got != want {
		t.Errorf("leader subject %q, server %q", got, want)
	}
	if got, want := natsEventsPrefix+"web.*", bus.EventsWildcard("web"); got != want {
		t.Errorf("events wildcard %q, server %q", got, want)
	}
}

func TestNATSURLs(t *testing.T) {
	t.Parallel()
	c := NewWithOptions([]string{"10.0.0.1:1111", "http://10.0.0.2:1111", "10.0.0.1:2222"}, WithNATS())
	want := []string{"nats://10.0.0.1:4222", "nats://10.0.0.2:4222"}
	if got := c.natsURLs(); !reflect.DeepEqual(got, want) {
		t.Errorf("default NATS URLs = %q, want %q", got, want)
	}
	c = NewWithOptions(nil, WithNATS("10.0.0.9:4000", "nats://h:1"))
	want = []string{"nats://10.0.0.9:4000", "nats://h:1"}
	if got := c.natsURLs(); !reflect.DeepEqual(got, want) {
		t.Errorf("NATS URLs = %q, want %q", got, want)
	}
}

// TestNATSHeartbeatsAndWatch: with NATS, heartbeats and events flow over
// NATS, even with the HTTP API gone once registered and watching.
func TestNATSHeartbeatsAndWatch(t *testing.T) {
	t.Parallel()
	s := startServerNATS(t, keepAliveTTL)
	c := NewWithOptions([]string{s.URL()}, WithTTL(keepAliveTTL), WithNATS(s.NATSURL()), WithRetryTimeout(time.Second))
	defer c.Close()
	ctx := testCtx(t, 15*time.Second)
	if err := c.AddService(ctx, "web", nil); err != nil {
		t.Fatal(err)
	}
	w, err := c.Watch(ctx, "web")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	// A prelude holds no leader event when there is no leader.
	if got := nextEvents(t, w, 1, 5*time.Second); !reflect.DeepEqual(got, []string{"current"}) {
		t.Fatalf("prelude = %q", got)
	}
	if _, ok := w.connectedSession().(*natsSession); !ok {
		t.Fatalf("watcher session is %T, want NATS", w.connectedSession())
	}
	h, err := c.Register(ctx, "web", "10.0.0.1:80", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if idx := h.Instance().Index; idx == 0 {
		t.Errorf("NATS registration: index unknown")
	}
	if got := nextEvents(t, w, 2, 5*time.Second); !reflect.DeepEqual(got, []string{"up 10.0.0.1:80", "leader 10.0.0.1:80"}) {
		t.Fatalf("after Register = %q", got)
	}

	// No more HTTP: heartbeats and events go on over NATS.
	s.StopHTTP()
	noEvent(t, w, 2*keepAliveTTL)
	if insts, err := s.Node().Instances("web"); err != nil || len(insts) != 1 {
		t.Fatalf("instances after 2 TTLs of NATS heartbeats = %v, %v", insts, err)
	}
	if err := h.Err(); err != nil {
		t.Fatalf("Err = %v", err)
	}
	h2, err := c.Register(ctx, "web", "10.0.0.2:80", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer h2.Stop()
	if got := nextEvents(t, w, 1, 5*time.Second); !reflect.DeepEqual(got, []string{"up 10.0.0.2:80"}) {
		t.Fatalf("NATS event = %q", got)
	}
	h.Stop()
	if got := nextEvents(t, w, 2, 5*time.Second); !reflect.DeepEqual(got, []string{"down 10.0.0.1:80", "leader 10.0.0.2:80"}) {
		t.Fatalf("after heartbeats stopped = %q", got)
	}
}

// TestNATSWatchAcrossRestart: a NATS-fed watcher reconciles after the
// server (HTTP and NATS) restarts with changes made while it was away.
func TestNATSWatchAcrossRestart(t *testing.T) {
	t.Parallel()
	s := startServerNATS(t, time.Minute)
	c := NewWithOptions([]string{s.URL()}, WithNATS(s.NATSURL()))
	defer c.Close()
	ctx := testCtx(t, 20*time.Second)
	if err := c.AddService(ctx, "web", nil); err != nil {
		t.Fatal(err)
	}
	s.register("web", "10.0.0.1:80")
	s.register("web", "10.0.0.2:80")
	leaders, err := c.Leaders(ctx, "web")
	if err != nil {
		t.Fatal(err)
	}
	w, err := c.Watch(ctx, "web")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	want := []string{"up 10.0.0.1:80", "up 10.0.0.2:80", "leader 10.0.0.1:80", "current"}
	if got := nextEvents(t, w, len(want), 5*time.Second); !reflect.DeepEqual(got, want) {
		t.Fatalf("prelude = %q, want %q", got, want)
	}
	nextLeader := func() string {
		t.Helper()
		select {
		case l := <-leaders:
			if l == nil {
				return "-"
			}
			return l.Addr
		case <-time.After(10 * time.Second):
			t.Fatal("no leader value")
		}
		return ""
	}
	if l := nextLeader(); l != "10.0.0.1:80" {
		t.Fatalf("first leader %s", l)
	}

	s.Stop()
	s.StartNode()
	s.register("web", "10.0.0.3:80")
	if _, err := s.Node().Deregister(ctx, "web", api.DefaultInstanceID("tcp", "10.0.0.1:80")); err != nil {
		t.Fatal(err)
	}
	s.Serve()

	want = []string{"down 10.0.0.1:80", "up 10.0.0.3:80", "leader 10.0.0.2:80"}
	if got := nextEvents(t, w, len(want), 10*time.Second); !reflect.DeepEqual(got, want) {
		t.Fatalf("after restart = %q, want %q", got, want)
	}
	if l := nextLeader(); l != "10.0.0.2:80" {
		t.Fatalf("leader after restart %s", l)
	}
	// Back on NATS, live.
	eventually(t, 5*time.Second, "watcher back on NATS", func() bool {
		_, ok := w.connectedSession().(*natsSession)
		return ok
	})
	s.register("web", "10.0.0.4:80")
	if got := nextEvents(t, w, 1, 5*time.Second); !reflect.DeepEqual(got, []string{"up 10.0.0.4:80"}) {
		t.Fatalf("next live event = %q", got)
	}
	noEvent(t, w, 200*time.Millisecond)
	select {
	case l := <-leaders:
		t.Fatalf("unexpected leader value %+v", l)
	default:
	}
}

// TestNATSUnreachableFallsBackToHTTP: with NATS configured but down,
// heartbeats and watches use HTTP.
func TestNATSUnreachableFallsBackToHTTP(t *testing.T) {
	t.Parallel()
	s := startServer(t, keepAliveTTL)
	c := NewWithOptions([]string{s.URL()}, WithTTL(keepAliveTTL), WithNATS(deadAddr(t)))
	defer c.Close()
	ctx := testCtx(t, 10*time.Second)
	h, err := c.AddServiceAndRegister(ctx, "web", "10.0.0.1:80", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	w, err := c.Watch(ctx, "web")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	nextEvents(t, w, 3, 5*time.Second)
	noEvent(t, w, 2*keepAliveTTL)
	if err := h.Err(); err != nil {
		t.Fatal(err)
	}
}

// TestNATSNoResponders: a NATS server where no discoverd answers
// heartbeats: the heartbeater uses HTTP.
func TestNATSNoResponders(t *testing.T) {
	t.Parallel()
	s := startServer(t, keepAliveTTL)
	ns, err := bus.StartServer(bus.ServerConfig{Name: "bare", ClientAddr: "127.0.0.1:-1", Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Shutdown()
	c := NewWithOptions([]string{s.URL()}, WithTTL(keepAliveTTL), WithNATS(ns.ClientURL()))
	defer c.Close()
	ctx := testCtx(t, 10*time.Second)
	h, err := c.AddServiceAndRegister(ctx, "web", "10.0.0.1:80", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if h.Instance().Index == 0 {
		t.Error("index unknown")
	}
	deadline := time.Now().Add(2 * keepAliveTTL)
	for time.Now().Before(deadline) {
		if insts, err := s.Node().Instances("web"); err != nil || len(insts) != 1 {
			t.Fatalf("instances = %v, %v", insts, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
