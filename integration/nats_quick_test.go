package integration

import (
	"testing"
	"time"

	"github.com/discoverd/discoverd/api"
)

// A NATS heartbeat of an instance registered unchanged is taken without a
// Raft write, whatever its JSON form; a new or changed one is registered,
// and answered once its write is applied. On a 3-voter cluster, through a
// follower's NATS server, so that the leader answers and every voter records
// the heartbeats.
func TestNATSHeartbeatUnchangedAndChanged(t *testing.T) {
	c := NewCluster(t, 3, 0)
	leader := c.WaitForLeader(10 * time.Second)
	// The follower's NATS server must reach the leader's subscription.
	c.WaitForFeeds(0)
	f := c.Followers()[0]
	mustDo(t, "PUT", leader.URL()+"/services/quick", api.ServiceConfig{})
	nc := natsConnect(t, f.NATSURL)
	events := natsEvents(t, nc, "discoverd.events.quick.*")

	// The first answers through a follower just after the cluster formed
	// may be lost (the registration is applied, the answer does not come
	// back, also before the quick path): wait until one comes back.
	WaitFor(t, 30*time.Second, "a heartbeat answered through the follower", func() bool {
		msg, err := nc.Request("discoverd.heartbeat.quick", heartbeatJSON("warm-up", "10.0.0.9:80"), 2*time.Second)
		return err == nil && string(msg.Data) == `{"ok":true}`
	})

	request := func(t *testing.T, payload string) {
		t.Helper()
		msg, err := nc.Request("discoverd.heartbeat.quick", []byte(payload), 5*time.Second)
		if err != nil || string(msg.Data) != `{"ok":true}` {
			t.Fatalf("heartbeat %s: %v %s", payload, err, msgData(msg))
		}
	}
	index := func(t *testing.T) uint64 {
		t.Helper()
		for _, inst := range instances(t, leader.URL(), "quick") {
			if inst.ID == "q1" {
				return inst.Index
			}
		}
		t.Fatal("q1 is not registered")
		return 0
	}

	cases := []struct {
		name    string
		payload string
		event   api.EventKind // "" when nothing is written
		addr    string
	}{
		{"new", `{"id":"q1","addr":"10.0.0.1:80","proto":"http","meta":{"v":"1"}}`, api.EventUp, "10.0.0.1:80"},
		{"unchanged", `{"id":"q1","addr":"10.0.0.1:80","proto":"http","meta":{"v":"1"}}`, "", ""},
		{"unchanged, reordered", ` {"meta":{"v":"1"}, "proto":"http","addr":"10.0.0.1:80","id":"q1"} `, "", ""},
		{"unchanged, escaped", `{"id":"q1","addr":"10.0.0.1:80","proto":"htt\u0070","meta":{"v":"1"}}`, "", ""},
		{"changed meta", `{"id":"q1","addr":"10.0.0.1:80","proto":"http","meta":{"v":"2"}}`, api.EventUpdate, "10.0.0.1:80"},
		{"changed addr", `{"id":"q1","addr":"10.0.0.2:80","proto":"http","meta":{"v":"2"}}`, api.EventUpdate, "10.0.0.2:80"},
		{"unchanged again", `{"id":"q1","addr":"10.0.0.2:80","proto":"http","meta":{"v":"2"}}`, "", ""},
	}
	var last uint64
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			request(t, tc.payload)
			if tc.event == "" {
				if got := index(t); got != last {
					t.Fatalf("index %d after an unchanged heartbeat, was %d", got, last)
				}
				return
			}
			ev := waitNATSEvent(t, events, 10*time.Second, func(ev api.Event) bool {
				return ev.Instance != nil && ev.Instance.ID == "q1" && ev.Kind == tc.event && ev.Instance.Addr == tc.addr
			})
			last = ev.Instance.Index
			if got := index(t); got != last {
				t.Fatalf("index %d, the %s event said %d", got, tc.event, last)
			}
		})
	}
	// No event of q1 other than those.
	for {
		select {
		case ev := <-events:
			if ev.Instance != nil && ev.Instance.ID == "q1" {
				t.Fatalf("unexpected %s event of %v", ev.Kind, ev.Instance)
			}
		default:
			return
		}
	}
}
