package httpapi_test

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/discoverd/discoverd/httpapi"
	"github.com/discoverd/discoverd/node"
)

// slowServer is a real node served by httpapi.NewServer with the given body
// timeout; entered receives each request as its handler starts.
func slowServer(t *testing.T, bodyTimeout time.Duration) (*http.Server, string, chan string) {
	t.Helper()
	n, err := node.New(node.Config{DataDir: t.TempDir(), Addr: "127.0.0.1:0", Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := n.WaitLeader(ctx); err != nil {
		t.Fatal(err)
	}
	api := httpapi.New(n, httpapi.Options{})
	entered := make(chan string, 4)
	srv := httpapi.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case entered <- r.URL.Path:
		default:
		}
		api.ServeHTTP(w, r)
	}), httpapi.ServerOptions{BodyTimeout: bodyTimeout})
	go srv.Serve(n.HTTPListener())
	t.Cleanup(func() { srv.Close() })
	return srv, n.Addr(), entered
}

// sendPartial opens a PUT announcing a 100-byte body and sends only 10.
func sendPartial(t *testing.T, addr string) net.Conn {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	fmt.Fprintf(conn, "PUT /services/slow/instances/a HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n")
	if _, err := conn.Write([]byte(`{"addr": "`)); err != nil {
		t.Fatal(err)
	}
	return conn
}

// awaitEnd reads what the server answers until it closes the connection,
// at most within limit, and returns the status line.
func awaitEnd(t *testing.T, conn net.Conn, limit time.Duration) string {
	t.Helper()
	conn.SetReadDeadline(time.Now().Add(limit))
	br := bufio.NewReader(conn)
	status, _ := br.ReadString('\n')
	for {
		if _, err := br.ReadByte(); err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				t.Fatalf("the connection was still open after %v (status %q)", limit, status)
			}
			return strings.TrimSpace(status)
		}
	}
}

func TestStalledBodyIsCutOff(t *testing.T) {
	const deadline = 2 * time.Second
	_, addr, entered := slowServer(t, deadline)
	start := time.Now()
	conn := sendPartial(t, addr)
	<-entered
	// Within the deadline plus a margin for a busy machine, never before it.
	status := awaitEnd(t, conn, deadline+8*time.Second)
	took := time.Since(start)
	if took < deadline {
		t.Errorf("cut off after %v, before the %v deadline", took, deadline)
	}
	if !strings.Contains(status, " 400 ") {
		t.Errorf("answer %q, want a 400", status)
	}
}

func TestStalledBodyDoesNotDelayShutdown(t *testing.T) {
	// A deadline far past the test's limits: only the shutdown may end it.
	srv, addr, entered := slowServer(t, 5*time.Minute)
	conn := sendPartial(t, addr)
	<-entered
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	start := time.Now()
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("Shutdown took %v with a stalled body", took)
	}
	awaitEnd(t, conn, 5*time.Second)
}

// A body that keeps arriving, slower than the deadline in total, is not cut.
func TestSlowButSteadyBodyIsNotCut(t *testing.T) {
	t.Parallel()
	// Pieces come every 250 ms against a 2 s deadline, which is pushed
	// back once half spent: a piece may come up to 1 s late, behind other
	// jobs on a busy machine, before this test could fail for it.
	const deadline = 2 * time.Second
	_, addr, entered := slowServer(t, deadline)
	body := `{"addr": "10.0.0.1:80", "proto": "http", "meta": {"pad": "` + strings.Repeat("x", 200) + `"}}`
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "PUT /services/slow/instances/a HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n", len(body))
	<-entered
	// A piece every 250 ms: 6.25 s in all, three times the deadline.
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	const pieces = 25
	step := (len(body) + pieces - 1) / pieces
	for i := 0; i < len(body); i += step {
		<-tick.C
		if _, err := conn.Write([]byte(body[i:min(i+step, len(body))])); err != nil {
			t.Fatalf("the server cut a body still arriving: %v", err)
		}
	}
	// The service does not exist: a 404 says the body was read to its end.
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	status, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil || !strings.Contains(status, " 404 ") {
		t.Fatalf("answer %q (%v), want the route's own 404", status, err)
	}
}
