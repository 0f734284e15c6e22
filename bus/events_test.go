package bus

import (
	"bufio"
	"encoding/json"
	"errors"
	"io"
	"net"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/discoverd/discoverd/api"
)

func TestSubjects(t *testing.T) {
	for _, c := range []struct{ got, want string }{
		{HeartbeatSubject("svc"), "discoverd.heartbeat.svc"},
		{HeartbeatWildcard, "discoverd.heartbeat.*"},
		{EventSubject("svc", api.EventUp), "discoverd.events.svc.up"},
		{EventSubject("my-svc", api.EventServiceMeta), "discoverd.events.my-svc.service_meta"},
		{EventsWildcard("svc"), "discoverd.events.svc.*"},
	} {
		if c.got != c.want {
			t.Errorf("got %q, want %q", c.got, c.want)
		}
	}
	if n := testing.AllocsPerRun(100, func() { _ = EventSubject("svc", api.EventLeader) }); n > 1 {
		t.Errorf("EventSubject allocates %v times, want at most 1", n)
	}
}

func TestEventPublish(t *testing.T) {
	s := startServer(t, ServerConfig{})
	watcher := dial(t, s)
	up, err := watcher.SubscribeSync("discoverd.events.svc.up")
	if err != nil {
		t.Fatal(err)
	}
	all, err := watcher.SubscribeSync(EventsWildcard("svc"))
	if err != nil {
		t.Fatal(err)
	}
	if err := watcher.Flush(); err != nil {
		t.Fatal(err)
	}
	p := NewEventPublisher(inProc(t, s), testLogger(t))
	inst := &api.Instance{ID: "a", Addr: "10.0.0.1:80", Proto: "http", Meta: map[string]string{"k": "<&>"}, Index: 7}
	events := []*api.Event{
		{Service: "svc", Kind: api.EventUp, Instance: inst, Index: 42},
		{Service: "svc", Kind: api.EventLeader, Instance: inst, Index: 43},
		{Service: "svc", Kind: api.EventLeader, Index: 44}, // no leader
		{Service: "other", Kind: api.EventUp, Instance: inst, Index: 45},
	}
	for _, ev := range events {
		if err := p.Publish(ev); err != nil {
			t.Fatalf("Publish: %v", err)
		}
	}
	msg, err := up.NextMsg(testTimeout)
	if err != nil {
		t.Fatal(err)
	}
	var got api.Event
	if err := json.Unmarshal(msg.Data, &got); err != nil {
		t.Fatalf("event %q: %v", msg.Data, err)
	}
	if !reflect.DeepEqual(&got, events[0]) || got.Index != 42 {
		t.Fatalf("got %+v, want %+v", got, events[0])
	}
	if msg.Data[len(msg.Data)-1] != '}' {
		t.Fatalf("payload %q has trailing bytes", msg.Data)
	}
	// The wildcard gets the three events of svc, in order.
	for _, want := range events[:3] {
		msg, err := all.NextMsg(testTimeout)
		if err != nil {
			t.Fatal(err)
		}
		if msg.Subject != EventSubject(want.Service, want.Kind) {
			t.Fatalf("subject %q, want %q", msg.Subject, EventSubject(want.Service, want.Kind))
		}
		var ev api.Event
		if err := json.Unmarshal(msg.Data, &ev); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(&ev, want) {
			t.Fatalf("got %+v, want %+v", ev, want)
		}
	}
	if msg, err := all.NextMsg(50 * time.Millisecond); err == nil {
		t.Fatalf("unexpected event %s on %s", msg.Data, msg.Subject)
	}
	if p.Published() != 4 || p.Failed() != 0 {
		t.Fatalf("published %d failed %d", p.Published(), p.Failed())
	}
}

func TestEventPublishClosedConnection(t *testing.T) {
	s := startServer(t, ServerConfig{})
	nc := inProc(t, s)
	p := NewEventPublisher(nc, testLogger(t))
	nc.Close()
	if err := p.Publish(&api.Event{Service: "svc", Kind: api.EventUp, Index: 1}); err == nil {
		t.Fatal("Publish on a closed connection succeeded")
	}
	if p.Failed() != 1 {
		t.Fatalf("failed = %d", p.Failed())
	}
}

// A watcher that never reads is cut off by the server (slow consumer); the
// publisher is not held up by it.
func TestEventPublishSlowWatcher(t *testing.T) {
	if testing.Short() {
		t.Skip("publishes about 100 MB")
	}
	s := startServer(t, ServerConfig{})
	// A raw client that subscribes to every event, then stops reading.
	raw, err := net.Dial("tcp", s.ClientAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	if _, err := raw.Write([]byte("CONNECT {\"verbose\":false}\r\nSUB discoverd.events.> 1\r\nPING\r\n")); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(raw)
	raw.SetReadDeadline(time.Now().Add(testTimeout))
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("waiting for PONG: %v", err)
		}
		if strings.HasPrefix(line, "PONG") {
			break
		}
	}
	// A fast watcher on the same subject keeps up.
	fast := dial(t, s)
	var fastGot atomic.Int64
	fastSub, err := fast.Subscribe(AllEventsWildcard, func(*nats.Msg) { fastGot.Add(1) })
	if err != nil {
		t.Fatal(err)
	}
	if err := fastSub.SetPendingLimits(-1, -1); err != nil {
		t.Fatal(err)
	}
	if err := fast.Flush(); err != nil {
		t.Fatal(err)
	}

	p := NewEventPublisher(inProc(t, s), testLogger(t))
	meta := map[string]string{"blob": strings.Repeat("x", 60<<10)}
	const n = 1700 // ~100 MB, beyond the server's 64 MiB per-client limit
	var slowest time.Duration
	start := time.Now()
	for i := range n {
		t0 := time.Now()
		ev := &api.Event{Service: "svc", Kind: api.EventUpdate, Index: uint64(i + 1),
			Instance: &api.Instance{ID: "a", Addr: "10.0.0.1:80", Proto: "http", Meta: meta}}
		if err := p.Publish(ev); err != nil {
			t.Fatalf("Publish %d: %v", i, err)
		}
		slowest = max(slowest, time.Since(t0))
	}
	t.Logf("published %d events of ~60 KiB in %v, slowest Publish %v", n, time.Since(start), slowest)
	if slowest > 2*time.Second {
		t.Fatalf("a Publish took %v: the slow watcher held up the publisher", slowest)
	}
	waitFor(t, "the fast watcher to get every event", func() bool { return fastGot.Load() == n })
	t.Logf("fast watcher done after %v", time.Since(start))
	// The server has closed the slow watcher: reading what it buffered ends
	// in an error, not a timeout.
	raw.SetReadDeadline(time.Now().Add(testTimeout))
	if _, err := io.Copy(io.Discard, br); err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatal("the slow watcher is still connected")
		}
	}
	t.Logf("slow watcher closed after %v", time.Since(start))
}
