package integration

import (
	"testing"
	"time"

	"github.com/discoverd/discoverd/api"
)

// TestClusterSSEOfServiceNotYetCreatedThroughProxy opens the three stream
// routes of a service that does not exist yet through a proxy: each opens
// with current alone, and the service's events follow once it is created
// (through a follower here, so the events reach the proxy's voter by Raft).
func TestClusterSSEOfServiceNotYetCreatedThroughProxy(t *testing.T) {
	c := NewCluster(t, 3, 1)
	proxy := c.Proxies()[0]
	paths := []string{"/services/later", "/services/later/instances", "/services/later/leader"}
	streams := make([]*sse, len(paths))
	for i, p := range paths {
		streams[i] = openSSE(t, proxy.URL()+p)
		if ev := streams[i].next(t, 5*time.Second); ev.Kind != api.EventCurrent || ev.Service != "later" {
			t.Fatalf("%s: first event %+v, want current of later", p, ev)
		}
	}
	if code, _ := do(t, "GET", proxy.URL()+"/services/later/instances", nil); code != 404 {
		t.Fatalf("JSON read of a service not created yet through the proxy: %d, want 404", code)
	}
	follower := c.Followers()[0]
	mustDo(t, "PUT", follower.URL()+"/services/later", api.ServiceConfig{})
	if code, b := register(t, follower.URL(), "later", "a", "10.0.0.1:80"); code != 200 {
		t.Fatalf("register: %d %s", code, b)
	}
	want := [][]api.EventKind{{api.EventUp, api.EventLeader}, {api.EventUp}, {api.EventLeader}}
	for i, kinds := range want {
		for _, k := range kinds {
			ev := streams[i].next(t, 5*time.Second)
			if ev.Kind != k || ev.Instance == nil || ev.Instance.ID != "a" {
				t.Fatalf("%s: event %+v, want %s of a", paths[i], ev, k)
			}
		}
	}
}
