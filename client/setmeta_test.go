package client

import (
	"context"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// stallingProxy relays TCP connections to a server until stall is set; from
// then on it closes the connections it relayed and holds every new one open
// without an answer, as a server that hangs does.
type stallingProxy struct {
	ln     net.Listener
	target string
	stall  atomic.Bool

	mu    sync.Mutex
	conns []net.Conn
}

func newStallingProxy(t *testing.T, target string) *stallingProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &stallingProxy{ln: ln, target: target}
	t.Cleanup(func() {
		ln.Close()
		p.closeAll()
	})
	go p.serve()
	return p
}

func (p *stallingProxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		p.conns = append(p.conns, c)
		p.mu.Unlock()
		if p.stall.Load() {
			continue // held open, never answered
		}
		up, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, up)
		p.mu.Unlock()
		go func() { io.Copy(up, c); up.Close() }()
		go func() { io.Copy(c, up); c.Close() }()
	}
}

func (p *stallingProxy) closeAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

// startStalling makes the proxy hang from now on.
func (p *stallingProxy) startStalling() {
	p.stall.Store(true)
	p.closeAll()
}

// TestSetMetaMovesOnFromAHungServer: SetMeta with a context that has no
// deadline bounds each attempt, so a server that accepts and never answers
// costs one attempt, not the heartbeater's send lock for good (which would
// stop its heartbeats and get the instance expired).
func TestSetMetaMovesOnFromAHungServer(t *testing.T) {
	const ttl = time.Minute // no periodic heartbeat during the test
	s := startServer(t, ttl)
	p := newStallingProxy(t, s.Addr())
	tr := &http.Transport{}
	c := NewWithOptions([]string{p.ln.Addr().String(), s.Addr()}, WithHTTPClient(&http.Client{Transport: tr}))
	defer c.Close()
	ctx := context.Background()
	if err := c.AddService(ctx, "web", nil); err != nil {
		t.Fatal(err)
	}
	h, err := c.Register(ctx, "web", "10.0.0.1:80", nil, HeartbeatTTL(ttl))
	if err != nil {
		t.Fatal(err)
	}
	defer h.Stop()

	p.startStalling()
	// The next request dials the proxy again, and hangs there.
	tr.CloseIdleConnections()
	done := make(chan error, 1)
	go func() { done <- h.SetMeta(ctx, map[string]string{"v": "2"}) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(2 * time.Minute):
		t.Fatal("SetMeta still waits on the hung server after 2 minutes")
	}
	insts, err := c.Instances(ctx, "web")
	if err != nil || len(insts) != 1 || insts[0].Meta["v"] != "2" {
		t.Fatalf("instances after SetMeta: %+v, %v", insts, err)
	}
}
