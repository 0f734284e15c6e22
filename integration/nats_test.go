package integration

import (
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/discoverd/discoverd/api"
	"github.com/nats-io/nats.go"
)

func natsConnect(t testing.TB, url string) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(url, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

func heartbeatJSON(id, addr string) []byte {
	b, _ := json.Marshal(api.Instance{ID: id, Addr: addr, Proto: "http"})
	return b
}

// natsEvents subscribes to subject and yields decoded events.
func natsEvents(t testing.TB, nc *nats.Conn, subject string) chan api.Event {
	t.Helper()
	ch := make(chan api.Event, 1024)
	_, err := nc.Subscribe(subject, func(m *nats.Msg) {
		var ev api.Event
		if err := json.Unmarshal(m.Data, &ev); err == nil {
			ch <- ev
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return ch
}

func waitNATSEvent(t testing.TB, ch chan api.Event, timeout time.Duration, match func(api.Event) bool) api.Event {
	t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case ev := <-ch:
			if match(ev) {
				return ev
			}
		case <-deadline:
			t.Fatalf("no matching NATS event within %v", timeout)
		}
	}
}

// pulse publishes heartbeats for ids every interval until stopped.
type pulse struct {
	mu   sync.Mutex
	ids  map[string]string
	sent map[string]time.Time // last publish of each id
	stop chan struct{}
	wg   sync.WaitGroup
}

func startPulse(t testing.TB, nc *nats.Conn, service string, ids map[string]string, every time.Duration) *pulse {
	p := &pulse{ids: ids, sent: make(map[string]time.Time), stop: make(chan struct{})}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		tick := time.NewTicker(every)
		defer tick.Stop()
		for {
			p.mu.Lock()
			for id, addr := range p.ids {
				nc.Publish("discoverd.heartbeat."+service, heartbeatJSON(id, addr))
				p.sent[id] = time.Now()
			}
			p.mu.Unlock()
			select {
			case <-p.stop:
				return
			case <-tick.C:
			}
		}
	}()
	t.Cleanup(p.Stop)
	return p
}

// drop stops the heartbeats of id and returns when the last was sent.
func (p *pulse) drop(id string) time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.ids, id)
	return p.sent[id]
}

func (p *pulse) Stop() {
	select {
	case <-p.stop:
	default:
		close(p.stop)
	}
	p.wg.Wait()
}

func TestNATSHeartbeatsRegisterAndLeaderFollowsExpiry(t *testing.T) {
	c := NewCluster(t, 1, 0, WithTTL(time.Second, 100*time.Millisecond))
	nd := c.Nodes[0]
	mustDo(t, "PUT", nd.URL()+"/services/orders", api.ServiceConfig{})

	nc := natsConnect(t, nd.NATSURL)
	leaders := natsEvents(t, nc, "discoverd.events.orders.leader")
	downs := natsEvents(t, nc, "discoverd.events.orders.down")

	p := startPulse(t, nc, "orders", map[string]string{"o1": "10.0.0.1:80"}, 200*time.Millisecond)
	first := waitNATSEvent(t, leaders, 3*time.Second, func(ev api.Event) bool { return ev.Instance != nil })
	if first.Instance.ID != "o1" || first.Index == 0 || first.Index != first.Instance.Index {
		t.Fatalf("first leader event %+v, want o1 with its index", first)
	}
	p.mu.Lock()
	p.ids["o2"], p.ids["o3"] = "10.0.0.2:80", "10.0.0.3:80"
	p.mu.Unlock()
	WaitFor(t, 3*time.Second, "three instances over HTTP", func() bool {
		// o2 and o3 register in the order the pulse sends them, either way.
		got := ids(instances(t, nd.URL(), "orders"))
		return got == "o1,o2,o3" || got == "o1,o3,o2"
	})

	// The leader stops heartbeating. How soon it is expired is measured by
	// the bench's detect workload; here it must not be before its TTL ran
	// out, and must be within a deadline sized for a busy machine.
	last := p.drop("o1")
	down := waitNATSEvent(t, downs, c.TTL+10*time.Second, func(ev api.Event) bool { return ev.Instance.ID == "o1" })
	if took := time.Since(last); took < c.TTL {
		t.Fatalf("o1 expired %v after its last heartbeat was sent, before its TTL of %v", took, c.TTL)
	}
	next := waitNATSEvent(t, leaders, 5*time.Second, func(ev api.Event) bool { return ev.Index >= down.Index })
	t.Logf("down and new leader %v after the last heartbeat", time.Since(last))
	left := instances(t, nd.URL(), "orders")
	if len(left) != 2 || next.Instance == nil || next.Instance.ID != left[0].ID {
		t.Fatalf("leader after o1 expired: %+v, want the oldest of %s", next.Instance, ids(left))
	}
}

func TestNATSHeartbeatRequestReply(t *testing.T) {
	c := NewCluster(t, 1, 0)
	nd := c.Nodes[0]
	mustDo(t, "PUT", nd.URL()+"/services/orders", api.ServiceConfig{})
	nc := natsConnect(t, nd.NATSURL)

	cases := []struct {
		name    string
		subject string
		payload []byte
		want    api.ErrorCode // "" for {"ok": true}
	}{
		{"ok", "discoverd.heartbeat.orders", heartbeatJSON("o1", "10.0.0.1:80"), ""},
		{"unknown service", "discoverd.heartbeat.nosuch", heartbeatJSON("o1", "10.0.0.1:80"), api.CodeNotFound},
		{"malformed JSON", "discoverd.heartbeat.orders", []byte(`{"addr": `), api.CodeValidation},
		{"bad addr", "discoverd.heartbeat.orders", []byte(`{"addr": "nowhere", "proto": "http"}`), api.CodeValidation},
		{"bad service name", "discoverd.heartbeat.Orders", heartbeatJSON("o1", "10.0.0.1:80"), api.CodeValidation},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			msg, err := nc.Request(tc.subject, tc.payload, 3*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			if tc.want == "" {
				var ok api.OK
				if json.Unmarshal(msg.Data, &ok) != nil || !ok.OK {
					t.Fatalf("answer %s, want {\"ok\":true}", msg.Data)
				}
				return
			}
			var e api.Error
			if err := json.Unmarshal(msg.Data, &e); err != nil || e.Code != tc.want || e.Message == "" {
				t.Fatalf("answer %s, want a %s error", msg.Data, tc.want)
			}
		})
	}
	// The same unknown service over HTTP gives the same error.
	code, b := register(t, nd.URL(), "nosuch", "o1", "10.0.0.1:80")
	var e api.Error
	if code != 404 || json.Unmarshal(b, &e) != nil || e.Code != api.CodeNotFound {
		t.Fatalf("HTTP heartbeat to an unknown service: %d %s", code, b)
	}
	// A plain publish of garbage is dropped and the subscriber keeps going.
	nc.Publish("discoverd.heartbeat.orders", []byte("garbage"))
	if msg, err := nc.Request("discoverd.heartbeat.orders", heartbeatJSON("o2", "10.0.0.2:80"), 3*time.Second); err != nil || string(msg.Data) != `{"ok":true}` {
		t.Fatalf("heartbeat after garbage: %v %s", err, msgData(msg))
	}
}

func msgData(m *nats.Msg) string {
	if m == nil {
		return ""
	}
	return string(m.Data)
}

func TestNATSAndHTTPHeartbeatsAreInterchangeable(t *testing.T) {
	// A TTL of 13 heartbeat periods: no expiry is measured, and a busy
	// machine may hold the heartbeats up for a while.
	c := NewCluster(t, 1, 0, WithTTL(2*time.Second, 50*time.Millisecond))
	nd := c.Nodes[0]
	mustDo(t, "PUT", nd.URL()+"/services/mixed", api.ServiceConfig{})
	nc := natsConnect(t, nd.NATSURL)
	downs := natsEvents(t, nc, "discoverd.events.mixed.down")

	// Registered over HTTP, kept alive over NATS alone.
	if code, b := register(t, nd.URL(), "mixed", "http-born", "10.0.0.1:80"); code != 200 {
		t.Fatalf("%d %s", code, b)
	}
	// Registered over NATS, kept alive over HTTP alone.
	if msg, err := nc.Request("discoverd.heartbeat.mixed", heartbeatJSON("nats-born", "10.0.0.2:80"), 3*time.Second); err != nil || string(msg.Data) != `{"ok":true}` {
		t.Fatalf("NATS registration: %v %s", err, msgData(msg))
	}
	p := startPulse(t, nc, "mixed", map[string]string{"http-born": "10.0.0.1:80"}, 150*time.Millisecond)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			case <-time.After(150 * time.Millisecond):
				register(t, nd.URL(), "mixed", "nats-born", "10.0.0.2:80")
			}
		}
	}()
	select {
	case ev := <-downs:
		t.Fatalf("instance %s went down though it kept heartbeating on the other transport", ev.Instance.ID)
	case <-time.After(2 * c.TTL):
	}
	close(stop)
	wg.Wait()
	p.Stop()
	if got := ids(instances(t, nd.URL(), "mixed")); got != "http-born,nats-born" {
		t.Fatalf("instances %q", got)
	}
}

func TestNATSThroughProxyLeafnode(t *testing.T) {
	c := NewCluster(t, 3, 1, WithTTL(time.Second, 100*time.Millisecond))
	proxy := c.Proxies()[0]
	mustDo(t, "PUT", proxy.URL()+"/services/edge", api.ServiceConfig{})
	nc := natsConnect(t, proxy.NATSURL)
	ups := natsEvents(t, nc, "discoverd.events.edge.up")
	// The subscription's interest travels from the proxy's NATS server to
	// every voter's once the leafnode is up; an event published before it
	// arrived would be lost to it. Wait until a probe published on each
	// voter comes through.
	for _, nd := range c.Nodes {
		pub := natsConnect(t, nd.NATSURL)
		probe, _ := json.Marshal(api.Event{Kind: "probe", Service: "edge", Instance: &api.Instance{ID: "probe-" + nd.Addr}})
		WaitFor(t, 20*time.Second, "edge's events from "+nd.Addr+" reaching the proxy's NATS", func() bool {
			if err := pub.Publish("discoverd.events.edge.up", probe); err != nil || pub.Flush() != nil {
				return false
			}
			timeout := time.After(200 * time.Millisecond)
			for {
				select {
				case ev := <-ups:
					if ev.Instance != nil && ev.Instance.ID == "probe-"+nd.Addr {
						return true
					}
				case <-timeout:
					return false
				}
			}
		})
	}
	// The proxy's NATS server joins the voters' cluster as a leafnode once it
	// learned their leafnode ports: retry the request until it is answered.
	var answer string
	WaitFor(t, 5*time.Second, "heartbeat answered through the proxy's NATS", func() bool {
		msg, err := nc.Request("discoverd.heartbeat.edge", heartbeatJSON("e1", "10.0.0.1:80"), 500*time.Millisecond)
		if err != nil {
			return false
		}
		answer = string(msg.Data)
		return true
	})
	if answer != `{"ok":true}` {
		t.Fatalf("answer %s", answer)
	}
	ev := waitNATSEvent(t, ups, 10*time.Second, func(ev api.Event) bool { return ev.Instance != nil && ev.Instance.ID == "e1" })
	if ev.Index == 0 {
		t.Fatalf("event without index: %+v", ev)
	}
	for _, nd := range c.Nodes {
		WaitFor(t, 2*time.Second, fmt.Sprintf("e1 on %s", nd.Addr), func() bool {
			code, b := do(t, "GET", nd.URL()+"/services/edge/instances", nil)
			return code == 200 && json.Valid(b) && len(b) > 2 && string(b) != "[]\n"
		})
	}
}

func TestNATSNewLeaderRepublishesLeaders(t *testing.T) {
	// w1 is registered once and not heartbeated: a TTL far longer than any
	// failover keeps it, so the only leader event is the new leader's
	// republished one, not an expiry's on a machine slow to fail over.
	c := NewCluster(t, 3, 0, WithTTL(time.Minute, 100*time.Millisecond))
	leader := c.WaitForLeader(5 * time.Second)
	f := c.Followers()[0]
	mustDo(t, "PUT", leader.URL()+"/services/web", api.ServiceConfig{})
	mustDo(t, "PUT", leader.URL()+"/services/web/instances/w1", api.Instance{Addr: "10.0.0.1:80", Proto: "http"})
	nc := natsConnect(t, f.NATSURL)
	leaders := natsEvents(t, nc, "discoverd.events.web.leader")
	c.WaitForFeeds(0)
	c.Kill(leader.Index)
	c.WaitForLeader(5 * time.Second)
	ev := waitNATSEvent(t, leaders, 3*time.Second, func(ev api.Event) bool { return true })
	if ev.Instance == nil || ev.Instance.ID != "w1" {
		t.Fatalf("republished leader %+v, want w1", ev)
	}
}
