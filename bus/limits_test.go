package bus

import (
	"bufio"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

func TestHeartbeatOverMaxPayloadIsRefusedAndCounted(t *testing.T) {
	const max = 1024
	s := startServer(t, ServerConfig{MaxPayload: max})
	sub := inProc(t, s)
	got, err := sub.SubscribeSync(HeartbeatSubject("web"))
	if err != nil {
		t.Fatal(err)
	}
	sub.Flush()

	// nats.go refuses an oversized message itself, so the test speaks the
	// protocol: a client that does not check is refused by the server.
	conn, err := net.DialTimeout("tcp", strings.TrimPrefix(s.ClientURL(), "nats://"), testTimeout)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(testTimeout))
	r := bufio.NewReader(conn)
	if line, err := r.ReadString('\n'); err != nil || !strings.HasPrefix(line, "INFO ") || !strings.Contains(line, fmt.Sprintf(`"max_payload":%d`, max)) {
		t.Fatalf("INFO line %q, %v: want max_payload %d", line, err, max)
	}
	body := `{"addr":"10.0.0.1:80","proto":"http","meta":{"pad":"` + strings.Repeat("x", 2*max) + `"}}`
	fmt.Fprintf(conn, "CONNECT {\"verbose\":false}\r\nPUB %s %d\r\n%s\r\n", HeartbeatSubject("web"), len(body), body)
	line, err := r.ReadString('\n')
	if err != nil || !strings.Contains(line, "Maximum Payload Violation") {
		t.Fatalf("answer %q, %v: want -ERR 'Maximum Payload Violation'", line, err)
	}
	if _, err := r.ReadString('\n'); err == nil {
		t.Fatal("the connection stays open after the violation")
	}
	waitFor(t, "the payload refusal to be counted", func() bool { _, p, _ := s.LimitRefusals(); return p == 1 })

	// A heartbeat within the limit still goes through, and only it arrived.
	pub := dial(t, s)
	if err := pub.Publish(HeartbeatSubject("web"), []byte(`{"addr":"10.0.0.1:80","proto":"http"}`)); err != nil {
		t.Fatal(err)
	}
	msg, err := got.NextMsg(testTimeout)
	if err != nil || len(msg.Data) > max {
		t.Fatalf("first heartbeat delivered: %v, %d bytes", err, len(msg.Data))
	}
}

func TestMaxConnsAndMaxSubsAreRefusedAndCounted(t *testing.T) {
	s := startServer(t, ServerConfig{MaxConns: 2, MaxSubs: 2})
	nc := dial(t, s)
	dial(t, s)
	if c, err := nats.Connect(s.ClientURL(), nats.Timeout(testTimeout)); err == nil {
		c.Close()
		t.Fatal("a third connection was accepted past MaxConns 2")
	}
	// The client sees the server's -ERR or, racing it, the closed socket;
	// the server counts the refusal either way.
	waitFor(t, "the connection refusal to be counted", func() bool { c, _, _ := s.LimitRefusals(); return c == 1 })

	errs := make(chan error, 4)
	nc.SetErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { errs <- err })
	for i := range 3 {
		if _, err := nc.SubscribeSync(fmt.Sprintf("discoverd.events.s%d.>", i)); err != nil {
			t.Fatal(err)
		}
	}
	nc.Flush()
	select {
	case err := <-errs:
		if !strings.Contains(strings.ToLower(err.Error()), "maximum subscriptions exceeded") {
			t.Fatalf("third subscription: %v, want maximum subscriptions exceeded", err)
		}
	case <-time.After(testTimeout):
		t.Fatal("a third subscription was accepted past MaxSubs 2")
	}
	waitFor(t, "the subscription refusal to be counted", func() bool { _, _, n := s.LimitRefusals(); return n == 1 })
}
