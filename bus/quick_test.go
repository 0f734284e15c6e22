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

	mu       sync.Mutex
	quick    []api.Instance
	quickErr error
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

func (h *quickHandler) Heartbeat(ctx context.Context, service string, inst *api.Instance) (*api.Instance, error) {
	if h.block != nil {
		h.entered <- struct{}{}
		<-h.block
	}
	return h.fakeHandler.Heartbeat(ctx, service, inst)
}

func (h *quickHandler) quickCalls() []api.Instance {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]api.Instance(nil), h.quick...)
}

func TestQuickHeartbeat(t *testing.T) {
	s := startServer(t, ServerConfig{})
	h := &quickHandler{fakeHandler: newFakeHandler(), block: make(chan struct{}), entered: make(chan struct{}, 1)}
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

	cases := []struct {
		name     string
		data     string
		quickErr error
		want     api.Instance
		wantCode api.ErrorCode // "" for {"ok":true}
	}{
		{"with meta", `{"id":"q-1","addr":"10.0.0.1:80","proto":"http","meta":{"zone":"a"}}`, nil,
			api.Instance{ID: "q-1", Addr: "10.0.0.1:80", Proto: "http", Meta: map[string]string{"zone": "a"}}, ""},
		// Nothing of the message before may be left in the reused instance.
		{"without meta", `{"id":"q-2","addr":"10.0.0.2:80","proto":"http"}`, nil,
			api.Instance{ID: "q-2", Addr: "10.0.0.2:80", Proto: "http"}, ""},
		{"refused", `{"id":"q-3","addr":"10.0.0.3:80","proto":"tcp"}`, api.Errorf(api.CodeUnavailable, "no leader"),
			api.Instance{ID: "q-3", Addr: "10.0.0.3:80", Proto: "tcp"}, api.CodeUnavailable},
	}
	for i, c := range cases {
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
			calls := h.quickCalls()
			if len(calls) != i+1 {
				t.Fatalf("quick path called %d times, want %d", len(calls), i+1)
			}
			last := calls[i]
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
	if sub.Failed() != 1 || sub.Malformed() != 0 {
		t.Fatalf("failed %d, malformed %d; want 1, 0", sub.Failed(), sub.Malformed())
	}
	if err := sub.Close(); err != nil && !errors.Is(err, context.Canceled) {
		t.Fatalf("close: %v", err)
	}
}
