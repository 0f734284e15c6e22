package integration

import (
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/discoverd/discoverd/api"
	"github.com/discoverd/discoverd/node"
)

// TestRequestsAtClusterStartWaitForLeader sends writes, heartbeats and reads
// to every node (voters and a proxy) the moment the nodes listen, before
// any leader is elected: each is answered 200, none 503.
func TestRequestsAtClusterStartWaitForLeader(t *testing.T) {
	c := NewCluster(t, 3, 1, NoStartWait(), WithNodeConfig(func(_ int, cfg *node.Config) {
		// Room for an election on a loaded machine; the default is 5s.
		cfg.LeaderWait = 20 * time.Second
	}))
	var wg sync.WaitGroup
	errs := make(chan string, 4*len(c.Nodes))
	for i, nd := range c.Nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			svc := fmt.Sprintf("start%d", i)
			for _, req := range []struct{ method, path string }{
				{"GET", "/raft/leader"},
				{"PUT", "/services/" + svc},
				{"PUT", "/services/" + svc + "/instances/a"},
				{"GET", "/services/" + svc + "/instances"},
			} {
				var body any
				if req.path == "/services/"+svc+"/instances/a" {
					body = api.Instance{Addr: "10.0.0.1:80", Proto: "http"}
				}
				if code, b := do(t, req.method, nd.URL()+req.path, body); code != http.StatusOK {
					errs <- fmt.Sprintf("node %d: %s %s: %d %s", i, req.method, req.path, code, b)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
}

// TestNoLeaderForLongerThanLeaderWaitIs503 leaves one voter of three
// running: it can elect no leader, so a write waits --leader-wait and is
// then answered 503 with retry: true.
func TestNoLeaderForLongerThanLeaderWaitIs503(t *testing.T) {
	const wait = time.Second
	c := NewCluster(t, 3, 0, WithNodeConfig(func(_ int, cfg *node.Config) { cfg.LeaderWait = wait }))
	mustDo(t, "PUT", c.Nodes[0].URL()+"/services/web", api.ServiceConfig{})
	c.Kill(1)
	c.Kill(2)
	lone := c.Nodes[0]
	WaitFor(t, 10*time.Second, "the lone voter to lose its leader", func() bool {
		return lone.Node().RaftLeader() == ""
	})
	for _, req := range []struct {
		method, path string
		body         any
	}{
		{"PUT", "/services/db", api.ServiceConfig{}},
		{"PUT", "/services/web/instances/a", api.Instance{Addr: "10.0.0.1:80", Proto: "http"}},
		{"GET", "/raft/leader", nil},
	} {
		start := time.Now()
		code, b := do(t, req.method, lone.URL()+req.path, req.body)
		took := time.Since(start)
		var e api.Error
		if code != http.StatusServiceUnavailable || json.Unmarshal(b, &e) != nil || !e.Retry {
			t.Errorf("%s %s with no leader: %d %s, want 503 with retry: true", req.method, req.path, code, b)
		}
		// A lower bound only: the request waited for a leader first.
		if took < wait {
			t.Errorf("%s %s answered after %v, before the leader wait of %v", req.method, req.path, took, wait)
		}
	}
}
