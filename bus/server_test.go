package bus

import (
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

// deliver publishes on pub until sub's subscription to subject receives a
// message, since interest crosses routes and leafnodes asynchronously.
func deliver(t *testing.T, pub, sub *nats.Conn, subject string) {
	t.Helper()
	s, err := sub.SubscribeSync(subject)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Unsubscribe()
	if err := sub.Flush(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(testTimeout)
	for {
		if err := pub.Publish(subject, []byte("hello")); err != nil {
			t.Fatal(err)
		}
		if err := pub.Flush(); err != nil {
			t.Fatal(err)
		}
		msg, err := s.NextMsg(20 * time.Millisecond)
		if err == nil {
			if string(msg.Data) != "hello" {
				t.Fatalf("got %q", msg.Data)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: nothing delivered within %v", subject, testTimeout)
		}
	}
}

func TestServerStartAndConnect(t *testing.T) {
	s := startServer(t, ServerConfig{})
	if !strings.HasPrefix(s.ClientURL(), "nats://127.0.0.1:") || strings.HasSuffix(s.ClientURL(), ":-1") || strings.HasSuffix(s.ClientURL(), ":0") {
		t.Fatalf("ClientURL %q is not a bound loopback port", s.ClientURL())
	}
	in := inProc(t, s)
	if addr := in.ConnectedAddr(); addr != "pipe" && addr != "" {
		// net.Pipe reports "pipe"; anything else would be a TCP dial.
		t.Fatalf("in-process connection is connected to %q", addr)
	}
	deliver(t, dial(t, s), in, "x.tcp-to-inproc")
	deliver(t, in, dial(t, s), "x.inproc-to-tcp")
}

func TestServerClientPortOff(t *testing.T) {
	s := startServer(t, ServerConfig{ClientAddr: ClientAddrOff})
	if s.ClientURL() != "" {
		t.Fatalf("ClientURL = %q with the client port off", s.ClientURL())
	}
	a, b := inProc(t, s), inProc(t, s)
	deliver(t, a, b, "x.off")

	// A leaf with its client port off.
	hub := startServer(t, ServerConfig{Name: "hub", LeafAddr: "127.0.0.1:-1"})
	leaf := startServer(t, ServerConfig{Name: "leaf", ClientAddr: ClientAddrOff, LeafRemotes: []string{hub.LeafAddr()}})
	deliver(t, inProc(t, leaf), dial(t, hub), "x.off-leaf-to-hub")
	deliver(t, dial(t, hub), inProc(t, leaf), "x.hub-to-off-leaf")
}

func TestServerBadConfig(t *testing.T) {
	for _, cfg := range []ServerConfig{
		{ClientAddr: "nonsense"},
		{ClientAddr: "127.0.0.1:99999"},
		{ClientAddr: "127.0.0.1:-1", Routes: []string{"127.0.0.1:1"}}, // routes need a cluster port
		{ClientAddr: "127.0.0.1:-1", ClusterAddr: "127.0.0.1:-1", Routes: []string{"no-port"}},
		{ClientAddr: "127.0.0.1:-1", LeafRemotes: []string{"127.0.0.1"}},
	} {
		if s, err := StartServer(cfg); err == nil {
			s.Shutdown()
			t.Errorf("StartServer(%+v) succeeded", cfg)
		}
	}
	// A port in use fails at start, not later.
	s := startServer(t, ServerConfig{})
	if s2, err := StartServer(ServerConfig{ClientAddr: s.ClientAddr()}); err == nil {
		s2.Shutdown()
		t.Fatal("StartServer on a port in use succeeded")
	}
}

func TestRoutesJoinTwoServers(t *testing.T) {
	a := startServer(t, ServerConfig{Name: "a", ClusterAddr: "127.0.0.1:-1"})
	b := startServer(t, ServerConfig{Name: "b", ClusterAddr: "127.0.0.1:-1", Routes: []string{a.ClusterAddr()}})
	waitFor(t, "the route", func() bool { return a.NumRemotes() == 1 && b.NumRemotes() == 1 })
	deliver(t, dial(t, a), dial(t, b), "x.a-to-b")
	deliver(t, dial(t, b), inProc(t, a), "x.b-to-a")
}

func TestSetRoutesAtRuntime(t *testing.T) {
	a := startServer(t, ServerConfig{Name: "a", ClusterAddr: "127.0.0.1:-1"})
	b := startServer(t, ServerConfig{Name: "b", ClusterAddr: "127.0.0.1:-1"})
	if a.NumRemotes() != 0 || b.NumRemotes() != 0 {
		t.Fatal("servers started apart are joined")
	}
	// Listing itself too, as a node passing every voter's address would.
	if err := b.SetRoutes([]string{a.ClusterAddr(), b.ClusterAddr()}); err != nil {
		t.Fatalf("SetRoutes: %v", err)
	}
	waitFor(t, "the route", func() bool { return a.NumRemotes() == 1 && b.NumRemotes() == 1 })
	deliver(t, dial(t, a), dial(t, b), "x.a-to-b")
	deliver(t, dial(t, b), dial(t, a), "x.b-to-a")
	// The same routes again is no change.
	if err := b.SetRoutes([]string{a.ClusterAddr(), b.ClusterAddr()}); err != nil {
		t.Fatalf("SetRoutes (same): %v", err)
	}
	// A server without a cluster port refuses routes.
	c := startServer(t, ServerConfig{Name: "c"})
	if err := c.SetRoutes([]string{a.ClusterAddr()}); err == nil {
		t.Fatal("SetRoutes without a cluster address succeeded")
	}
	if err := b.SetRoutes([]string{"bad"}); err == nil {
		t.Fatal("SetRoutes with a bad address succeeded")
	}
}

func TestLeafnodeBothWays(t *testing.T) {
	hub := startServer(t, ServerConfig{Name: "hub", LeafAddr: "127.0.0.1:-1"})
	leaf := startServer(t, ServerConfig{Name: "leaf", LeafRemotes: []string{hub.LeafAddr()}})
	waitFor(t, "the leafnode connection", func() bool { return hub.NumLeafNodes() == 1 && leaf.NumLeafNodes() == 1 })
	deliver(t, dial(t, hub), dial(t, leaf), "x.hub-to-leaf")
	deliver(t, dial(t, leaf), inProc(t, hub), "x.leaf-to-hub")
}

// A clustered hub (voters with routes) and a leaf that reaches the second
// voter through the first: the shape of voters and proxies.
func TestLeafnodeToCluster(t *testing.T) {
	a := startServer(t, ServerConfig{Name: "a", ClusterAddr: "127.0.0.1:-1", LeafAddr: "127.0.0.1:-1"})
	b := startServer(t, ServerConfig{Name: "b", ClusterAddr: "127.0.0.1:-1", LeafAddr: "127.0.0.1:-1", Routes: []string{a.ClusterAddr()}})
	leaf := startServer(t, ServerConfig{Name: "proxy", LeafRemotes: []string{a.LeafAddr()}})
	waitFor(t, "route and leafnode", func() bool { return a.NumRemotes() == 1 && leaf.NumLeafNodes() == 1 })
	deliver(t, dial(t, leaf), dial(t, b), "x.proxy-to-b")
	deliver(t, dial(t, b), dial(t, leaf), "x.b-to-proxy")
}

func TestSetLeafRemotesAtRuntime(t *testing.T) {
	hub1 := startServer(t, ServerConfig{Name: "hub1", ClusterAddr: "127.0.0.1:-1", LeafAddr: "127.0.0.1:-1"})
	hub2 := startServer(t, ServerConfig{Name: "hub2", ClusterAddr: "127.0.0.1:-1", LeafAddr: "127.0.0.1:-1", Routes: []string{hub1.ClusterAddr()}})
	leaf := startServer(t, ServerConfig{Name: "leaf"})
	client := dial(t, leaf) // the client port stays up throughout
	if leaf.NumLeafNodes() != 0 {
		t.Fatal("leaf connected with no remotes")
	}
	if err := leaf.SetLeafRemotes([]string{hub1.LeafAddr()}); err != nil {
		t.Fatalf("SetLeafRemotes: %v", err)
	}
	waitFor(t, "the leafnode connection", func() bool { return hub1.NumLeafNodes() == 1 && leaf.NumLeafNodes() == 1 })
	deliver(t, client, dial(t, hub1), "x.leaf-to-hub1")
	deliver(t, dial(t, hub1), client, "x.hub1-to-leaf")

	// Both voters, in any order: still one leafnode connection.
	if err := leaf.SetLeafRemotes([]string{hub2.LeafAddr(), hub1.LeafAddr()}); err != nil {
		t.Fatalf("SetLeafRemotes (two): %v", err)
	}
	if err := leaf.SetLeafRemotes([]string{hub1.LeafAddr(), hub2.LeafAddr(), hub1.LeafAddr()}); err != nil {
		t.Fatalf("SetLeafRemotes (same set): %v", err)
	}
	waitFor(t, "one leafnode connection", func() bool {
		return leaf.NumLeafNodes() == 1 && hub1.NumLeafNodes()+hub2.NumLeafNodes() == 1
	})
	deliver(t, client, dial(t, hub2), "x.leaf-to-hub2")

	// Only hub2.
	if err := leaf.SetLeafRemotes([]string{hub2.LeafAddr()}); err != nil {
		t.Fatalf("SetLeafRemotes (hub2): %v", err)
	}
	waitFor(t, "the leafnode on hub2", func() bool {
		return leaf.NumLeafNodes() == 1 && hub2.NumLeafNodes() == 1 && hub1.NumLeafNodes() == 0
	})
	deliver(t, dial(t, hub1), client, "x.hub1-via-hub2-to-leaf")

	// None.
	if err := leaf.SetLeafRemotes(nil); err != nil {
		t.Fatalf("SetLeafRemotes (none): %v", err)
	}
	waitFor(t, "no leafnode", func() bool { return leaf.NumLeafNodes() == 0 && hub2.NumLeafNodes() == 0 })
	deliver(t, client, dial(t, leaf), "x.local-still-works")
}

// A proxy's leaf fails over to another voter when its voter goes away.
func TestLeafnodeFailover(t *testing.T) {
	hub1 := startServer(t, ServerConfig{Name: "hub1", ClusterAddr: "127.0.0.1:-1", LeafAddr: "127.0.0.1:-1"})
	hub2 := startServer(t, ServerConfig{Name: "hub2", ClusterAddr: "127.0.0.1:-1", LeafAddr: "127.0.0.1:-1", Routes: []string{hub1.ClusterAddr()}})
	leaf := startServer(t, ServerConfig{Name: "leaf", LeafRemotes: []string{hub1.LeafAddr(), hub2.LeafAddr()}})
	waitFor(t, "route and leafnode", func() bool { return hub1.NumRemotes() == 1 && leaf.NumLeafNodes() == 1 })
	client := dial(t, leaf)
	gone, stay := hub1, hub2
	if hub2.NumLeafNodes() == 1 {
		gone, stay = hub2, hub1
	}
	deliver(t, client, dial(t, stay), "x.before")
	start := time.Now()
	gone.Shutdown()
	waitFor(t, "the leafnode on the other voter", func() bool { return stay.NumLeafNodes() == 1 })
	deliver(t, client, dial(t, stay), "x.after")
	t.Logf("failed over in %v", time.Since(start))
}

// A voter with its client port off still joins the cluster at runtime.
func TestSetRoutesClientPortOff(t *testing.T) {
	a := startServer(t, ServerConfig{Name: "a", ClusterAddr: "127.0.0.1:-1"})
	b := startServer(t, ServerConfig{Name: "b", ClientAddr: ClientAddrOff, ClusterAddr: "127.0.0.1:-1", LeafAddr: "127.0.0.1:-1"})
	if err := b.SetRoutes([]string{a.ClusterAddr()}); err != nil {
		t.Fatalf("SetRoutes: %v", err)
	}
	waitFor(t, "the route", func() bool { return a.NumRemotes() == 1 })
	deliver(t, dial(t, a), inProc(t, b), "x.a-to-b")
	deliver(t, inProc(t, b), dial(t, a), "x.b-to-a")
}
