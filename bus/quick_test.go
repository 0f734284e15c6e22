package bus

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/discoverd/discoverd/api"
)

// quickHandler takes at once the heartbeats of instances whose id starts
// with "q" (answering quickErr), and leaves the others to Heartbeat, which
// waits for release while block is set.
type quickHandler struct {
	*fakeHandler
	block   chan struct{}
	entered chan struct{}

	mu         sync.Mutex
	registered map[string]api.Instance
	quick      []api.Instance
	unchanged  []string
	quickErr   error
}

func (h *quickHandler) QuickHeartbeat(_ string, inst *api.Instance) (bool, error) {
	if !strings.HasPrefix(inst.ID, "q") {
		return false, nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.quick = append(h.quick, *inst)
	return true, h.quickErr
}

// QuickHeartbeatUnchanged takes the heartbeats of the registered instances
// that carry their registration.
func (h *quickHandler) QuickHeartbeatUnchanged(_, id string, same func(*api.Instance) bool) (bool, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	stored, ok := h.registered[id]
	if !ok || !same(&stored) {
		return false, nil
	}
	h.unchanged = append(h.unchanged, id)
	return true, h.quickErr
}

func (h *quickHandler) Heartbeat(ctx context.Context, service string, inst *api.Instance) (*api.Instance, error) {
	if h.block != nil {
		h.entered <- struct{}{}
		<-h.block
	}
	return h.fakeHandler.Heartbeat(ctx, service, inst)
}

func (h *quickHandler) quickCalls() ([]api.Instance, []string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]api.Instance(nil), h.quick...), append([]string(nil), h.unchanged...)
}

func TestQuickHeartbeat(t *testing.T) {
	s := startServer(t, ServerConfig{})
	h := &quickHandler{fakeHandler: newFakeHandler(), block: make(chan struct{}), entered: make(chan struct{}, 1),
		registered: map[string]api.Instance{
			"q-1": {ID: "q-1", Addr: "10.0.0.1:80", Proto: "http", Meta: map[string]string{"zone": "a"}},
			"q-2": {ID: "q-2", Addr: "10.0.0.2:80", Proto: "http"},
		}}
	sub, err := SubscribeHeartbeats(inProc(t, s), "node-a", 2, h, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sub.Close() })
	hb := &hbSetup{srv: s, sub: sub, client: dial(t, s)}

	// A heartbeat the quick path declines goes to a worker, which is held up
	// there: the heartbeats behind it still go through the quick path.
	if err := hb.client.PublishRequest(HeartbeatSubject("svc"), "_INBOX.never", []byte(`{"id":"slow-1","addr":"10.0.0.1:80","proto":"http"}`)); err != nil {
		t.Fatal(err)
	}
	<-h.entered

	// Unchanged heartbeats of registered instances are taken undecoded;
	// the others are decoded for QuickHeartbeat.
	cases := []struct {
		name      string
		data      string
		quickErr  error
		unchanged bool
		want      api.Instance // what QuickHeartbeat got, when decoded
		wantCode  api.ErrorCode
	}{
		{"unchanged", `{"id":"q-1","addr":"10.0.0.1:80","proto":"http","meta":{"zone":"a"}}`, nil, true, api.Instance{}, ""},
		{"unchanged, spaced and reordered", " {\"meta\": {\"zone\":\"a\"} ,\n\"proto\":\"http\", \"addr\":\"10.0.0.1:80\",\"id\":\"q-1\"}\t", nil, true, api.Instance{}, ""},
		{"unchanged, refused", `{"id":"q-2","addr":"10.0.0.2:80","proto":"http"}`, api.Errorf(api.CodeUnavailable, "no leader"), true, api.Instance{}, api.CodeUnavailable},
		{"changed meta", `{"id":"q-1","addr":"10.0.0.1:80","proto":"http","meta":{"zone":"b"}}`, nil, false,
			api.Instance{ID: "q-1", Addr: "10.0.0.1:80", Proto: "http", Meta: map[string]string{"zone": "b"}}, ""},
		// Nothing of the message before may be left in the reused instance.
		{"changed addr, no meta", `{"id":"q-1","addr":"10.0.0.9:80","proto":"http"}`, nil, false,
			api.Instance{ID: "q-1", Addr: "10.0.0.9:80", Proto: "http"}, ""},
		{"escaped", `{"id":"q-2","addr":"10.0.0.2:80","proto":"htt\u0070"}`, nil, false,
			api.Instance{ID: "q-2", Addr: "10.0.0.2:80", Proto: "http"}, ""},
		{"unknown", `{"id":"q-3","addr":"10.0.0.3:80","proto":"tcp"}`, api.Errorf(api.CodeUnavailable, "no leader"), false,
			api.Instance{ID: "q-3", Addr: "10.0.0.3:80", Proto: "tcp"}, api.CodeUnavailable},
	}
	var nquick, nunchanged int
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h.mu.Lock()
			h.quickErr = c.quickErr
			h.mu.Unlock()
			got := hb.request(t, HeartbeatSubject("svc"), []byte(c.data))
			if c.wantCode == "" {
				if string(got) != `{"ok":true}` {
					t.Fatalf("answer %q, want ok", got)
				}
			} else {
				wantErrorBody(t, got, c.wantCode)
			}
			calls, unchanged := h.quickCalls()
			if c.unchanged {
				nunchanged++
			} else {
				nquick++
			}
			if len(calls) != nquick || len(unchanged) != nunchanged {
				t.Fatalf("quick path took %d decoded and %d undecoded, want %d and %d", len(calls), len(unchanged), nquick, nunchanged)
			}
			if c.unchanged {
				return
			}
			last := calls[nquick-1]
			if last.ID != c.want.ID || last.Addr != c.want.Addr || last.Proto != c.want.Proto || len(last.Meta) != len(c.want.Meta) || last.Meta["zone"] != c.want.Meta["zone"] {
				t.Fatalf("quick path got %+v, want %+v", last, c.want)
			}
		})
	}
	if n := h.count(); n != 0 {
		t.Fatalf("Heartbeat finished %d calls while held up", n)
	}

	// Released, the declined heartbeat reaches Heartbeat with an instance of
	// its own, and another one is answered from there.
	close(h.block)
	if c := h.next(t); c.inst.ID != "slow-1" || !c.ctxOK {
		t.Fatalf("worker call %+v", c)
	}
	// A closed block no longer holds anything up.
	if got := hb.request(t, HeartbeatSubject("svc"), []byte(`{"id":"slow-2","addr":"10.0.0.1:80","proto":"http"}`)); string(got) != `{"ok":true}` {
		t.Fatalf("answer from the worker %q", got)
	}
	if sub.Failed() != 2 || sub.Malformed() != 0 {
		t.Fatalf("failed %d, malformed %d; want 2, 0", sub.Failed(), sub.Malformed())
	}
	if err := sub.Close(); err != nil && !errors.Is(err, context.Canceled) {
		t.Fatalf("close: %v", err)
	}
}
