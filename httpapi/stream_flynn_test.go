package httpapi_test

import (
	"strconv"
	"testing"
	"time"

	"github.com/discoverd/discoverd/api"
)

// TestStreamOfServiceNotYetCreated opens the three stream routes on a service
// that does not exist, as Flynn's router does when it adds a route: each is
// a 200 stream whose prelude is current alone, and the service's events
// follow once it is created. JSON reads of the service stay 404.
func TestStreamOfServiceNotYetCreated(t *testing.T) {
	s := newServer(t)
	all := s.stream("/services/later", nil)
	insts := s.stream("/services/later/instances", nil)
	leader := s.stream("/services/later/leader", nil)
	for _, st := range []*sseStream{all, insts, leader} {
		if ev := st.expect(api.EventCurrent, ""); ev.Service != "later" {
			t.Fatalf("current of service %q, want later", ev.Service)
		}
	}
	for _, path := range []string{"/services/later/instances", "/services/later/leader", "/services/later/meta"} {
		s.wantError(s.do("GET", path, "", nil), 404, api.CodeNotFound)
	}

	s.must("PUT", "/services/later", "")
	a := s.register("later", "a", "10.0.0.1:80", nil)
	for _, ev := range []api.Event{all.expect(api.EventUp, "a"), all.expect(api.EventLeader, "a"), insts.expect(api.EventUp, "a"), leader.expect(api.EventLeader, "a")} {
		if ev.Index != a.Index || ev.Instance.Index != a.Index {
			t.Errorf("event %+v, want index %d", ev, a.Index)
		}
	}
}

// TestStreamPreludeHasNoEmptyLeaderOrMeta checks that a prelude never holds
// a leader event without an instance nor a service_meta event without meta
// (Flynn's client dereferences both while it reconciles), on a new stream
// and on a reconnect with Last-Event-ID, and that a live change to "no
// leader" is still sent.
func TestStreamPreludeHasNoEmptyLeaderOrMeta(t *testing.T) {
	s := newServer(t)
	s.must("PUT", "/services/web", "")
	for _, path := range []string{"/services/web", "/services/web/leader", "/services/web/instances"} {
		st := s.stream(path, nil)
		st.expect(api.EventCurrent, "")
	}

	s.register("web", "a", "10.0.0.1:80", nil)
	st := s.stream("/services/web", nil)
	st.expect(api.EventUp, "a")
	st.expect(api.EventLeader, "a")
	cur := st.expect(api.EventCurrent, "")
	s.must("DELETE", "/services/web/instances/a", "")
	st.expect(api.EventDown, "a")
	if ev := st.expect(api.EventLeader, ""); ev.Instance != nil {
		t.Fatalf("live leader event %+v, want one with no instance", ev)
	}
	st.close()

	// Reconnects, fresh and resumed: every event before current (if any)
	// carries what its kind needs.
	for _, hdr := range []map[string]string{nil, {api.LastEventIDHeader: strconv.FormatUint(cur.Index, 10)}} {
		for _, path := range []string{"/services/web", "/services/web/leader"} {
			st := s.stream(path, hdr)
			sawCurrent := hdr != nil // a resumed stream holds no prelude of its own
			for {
				e := st.next(5 * time.Second)
				if e.ev.Kind == api.EventCurrent {
					break
				}
				if e.ev.Kind == api.EventResync {
					sawCurrent = false
					continue
				}
				if !sawCurrent {
					checkPreludeEvent(t, path, e.ev)
				}
				if hdr != nil && e.ev.Kind == api.EventLeader {
					// The resumed stream replays the live change to
					// "no leader"; nothing else follows it.
					if e.ev.Instance != nil {
						t.Fatalf("%s resumed: leader event %s, want no instance", path, e.data)
					}
					break
				}
			}
			st.close()
		}
	}
}

func checkPreludeEvent(t *testing.T, path string, ev api.Event) {
	t.Helper()
	switch ev.Kind {
	case api.EventUp, api.EventUpdate, api.EventDown, api.EventLeader:
		if ev.Instance == nil {
			t.Fatalf("%s: prelude %s event with no instance: %+v", path, ev.Kind, ev)
		}
	case api.EventServiceMeta:
		if ev.ServiceMeta == nil {
			t.Fatalf("%s: prelude service_meta event with no meta: %+v", path, ev)
		}
	}
}

// TestStreamFlynnReconnectReplay replays what Flynn's client does on a
// reconnect, from the protocol: it watches and sees a leader; the
// connection is cut; the leader deregisters; it reconnects (Flynn's client
// sends no Last-Event-ID) and reconciles its picture from the prelude up to
// current, dereferencing the instance of every up and leader event. The
// prelude must let it reach "no leader, no instances" with no null
// instance on the way.
func TestStreamFlynnReconnectReplay(t *testing.T) {
	s := newServer(t)
	s.must("PUT", "/services/web", "")
	s.register("web", "a", "10.0.0.1:80", nil)

	type picture struct {
		insts  map[string]bool
		leader string
	}
	reconcile := func(st *sseStream) picture {
		p := picture{insts: map[string]bool{}}
		for {
			e := st.next(5 * time.Second)
			switch e.ev.Kind {
			case api.EventCurrent:
				return p
			case api.EventUp, api.EventUpdate:
				p.insts[e.ev.Instance.ID] = true // dereferenced, as Flynn's client does
			case api.EventLeader:
				if e.ev.Instance == nil {
					t.Fatalf("leader event with a null instance before current: %s", e.data)
				}
				p.leader = e.ev.Instance.ID
			case api.EventServiceMeta:
				if e.ev.ServiceMeta == nil {
					t.Fatalf("service_meta event with null meta before current: %s", e.data)
				}
			}
		}
	}

	// 1. Watch, see a leader.
	st := s.stream("/services/web", nil)
	if p := reconcile(st); p.leader != "a" || !p.insts["a"] {
		t.Fatalf("first picture %+v, want a up and leading", p)
	}
	// 2. Cut the connection.
	st.close()
	// 3. The leader deregisters.
	s.must("DELETE", "/services/web/instances/a", "")
	// 4. Reconnect.
	st = s.stream("/services/web", nil)
	// 5. Reconcile to "no leader".
	if p := reconcile(st); p.leader != "" || len(p.insts) != 0 {
		t.Fatalf("picture after reconnect %+v, want no instances and no leader", p)
	}
	// Live again: a new instance leads.
	s.register("web", "b", "10.0.0.2:80", nil)
	st.expect(api.EventUp, "b")
	st.expect(api.EventLeader, "b")
}
