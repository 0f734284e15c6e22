package integration

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/discoverd/discoverd/api"
	"github.com/discoverd/discoverd/auth"
	"github.com/discoverd/discoverd/bus"
	"github.com/discoverd/discoverd/httpapi"
	"github.com/discoverd/discoverd/node"
)

const natsAuthFile = `{"tokens": [
  {"name": "ops",  "secret": "secret-admin", "role": "admin"},
  {"name": "web",  "secret": "secret-web",   "role": "service", "services": ["web", "web-*"]},
  {"name": "dash", "secret": "secret-read",  "role": "read"}
]}`

// authNode is a real single node with auth on HTTP and NATS.
func authNode(t *testing.T) (*node.Node, *auth.Store) {
	t.Helper()
	set, err := auth.Parse([]byte(natsAuthFile))
	if err != nil {
		t.Fatal(err)
	}
	store := auth.NewStore(set, zerolog.Nop())
	n, err := node.New(node.Config{
		DataDir:     t.TempDir(),
		Addr:        "127.0.0.1:0",
		InstanceTTL: time.Minute,
		NATS:        true,
		NATSAddr:    "127.0.0.1:-1",
		NATSAuth:    &bus.ServerAuth{Tokens: set.Tokens(), NodePassword: "node-password"},
		Log:         zerolog.Nop(),
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := httpapi.NewServer(httpapi.New(n, httpapi.Options{Auth: store}), httpapi.ServerOptions{})
	go srv.Serve(n.HTTPListener())
	t.Cleanup(func() {
		n.EndStreams()
		srv.Close()
		n.Close()
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := n.WaitLeader(ctx); err != nil {
		t.Fatal(err)
	}
	return n, store
}

// natsUser connects as user and collects the server's asynchronous errors
// (permission violations).
func natsUser(t *testing.T, url, user, password string) (*nats.Conn, chan error) {
	t.Helper()
	errs := make(chan error, 16)
	nc, err := nats.Connect(url, nats.UserInfo(user, password), nats.MaxReconnects(0),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { errs <- err }))
	if err != nil {
		t.Fatalf("connecting as %s: %v", user, err)
	}
	t.Cleanup(nc.Close)
	return nc, errs
}

func wantViolation(t *testing.T, errs chan error, subject string) {
	t.Helper()
	select {
	case err := <-errs:
		if !strings.Contains(err.Error(), "Permissions Violation") || !strings.Contains(err.Error(), subject) {
			t.Fatalf("got %v, want a permissions violation on %s", err, subject)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("no permissions violation for %s within 10s", subject)
	}
}

func TestNATSAuth(t *testing.T) {
	n, _ := authNode(t)
	url := n.NATSURL()
	admin := func(method, path, body string) int {
		req, _ := http.NewRequest(method, "http://"+n.Addr()+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer secret-admin")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for _, svc := range []string{"web", "db"} {
		if st := admin("PUT", "/services/"+svc, `{}`); st != 200 {
			t.Fatalf("creating %s: %d", svc, st)
		}
	}

	t.Run("no credentials are refused", func(t *testing.T) {
		nc, err := nats.Connect(url, nats.MaxReconnects(0))
		if err == nil {
			nc.Close()
			t.Fatal("connected without credentials")
		}
		if !errors.Is(err, nats.ErrAuthorization) && !strings.Contains(strings.ToLower(err.Error()), "authorization") {
			t.Fatalf("got %v, want an authorization error", err)
		}
		if nc, err := nats.Connect(url, nats.UserInfo("web", "wrong-secret"), nats.MaxReconnects(0)); err == nil {
			nc.Close()
			t.Fatal("connected with a wrong secret")
		}
	})

	t.Run("a read user subscribes to events and publishes nothing", func(t *testing.T) {
		nc, errs := natsUser(t, url, "dash", "secret-read")
		events := natsEvents(t, nc, bus.AllEventsWildcard)
		if st := admin("PUT", "/services/db/instances/r1", `{"addr": "10.0.0.1:1", "proto": "http"}`); st != 200 {
			t.Fatalf("register: %d", st)
		}
		waitNATSEvent(t, events, 10*time.Second, func(ev api.Event) bool {
			return ev.Kind == api.EventUp && ev.Instance != nil && ev.Instance.ID == "r1"
		})
		nc.Publish(bus.HeartbeatSubject("db"), heartbeatJSON("r2", "10.0.0.1:2"))
		wantViolation(t, errs, bus.HeartbeatSubject("db"))
	})

	t.Run("a service user heartbeats its own service only", func(t *testing.T) {
		nc, errs := natsUser(t, url, "web", "secret-web")
		msg, err := nc.Request(bus.HeartbeatSubject("web"), heartbeatJSON("w1", "10.0.0.2:80"), 10*time.Second)
		if err != nil {
			t.Fatalf("heartbeat of its own service: %v", err)
		}
		if !strings.Contains(string(msg.Data), `"ok":true`) {
			t.Fatalf("heartbeat answered %s", msg.Data)
		}
		if _, err := n.Instances("web"); err != nil {
			t.Fatal(err)
		}
		nc.Publish(bus.HeartbeatSubject("db"), heartbeatJSON("w2", "10.0.0.2:81"))
		wantViolation(t, errs, bus.HeartbeatSubject("db"))
		list, _ := n.Instances("db")
		for _, inst := range list {
			if inst.ID == "w2" {
				t.Fatal("a heartbeat on another service's subject registered an instance")
			}
		}

		// Events: its own service's, never another's, and it publishes none.
		own := natsEvents(t, nc, bus.EventsWildcard("web"))
		if st := admin("PUT", "/services/web/instances/w3", `{"addr": "10.0.0.2:82", "proto": "http"}`); st != 200 {
			t.Fatalf("register: %d", st)
		}
		waitNATSEvent(t, own, 10*time.Second, func(ev api.Event) bool { return ev.Instance != nil && ev.Instance.ID == "w3" })
		nc.Subscribe(bus.EventsWildcard("db"), func(*nats.Msg) {})
		wantViolation(t, errs, bus.EventsWildcard("db"))
		nc.Publish(bus.EventSubject("web", api.EventUp), []byte(`{"service": "web", "kind": "up"}`))
		wantViolation(t, errs, bus.EventSubject("web", api.EventUp))
	})

	t.Run("the secret alone logs in, under the user name derived from it", func(t *testing.T) {
		nc, err := nats.Connect(url, nats.UserInfo(api.NATSTokenUser("secret-read"), "secret-read"), nats.MaxReconnects(0))
		if err != nil {
			t.Fatalf("login with the derived name: %v", err)
		}
		nc.Close()
		if nc, err := nats.Connect(url, nats.UserInfo(api.NATSTokenUser("secret-read"), "secret-web"), nats.MaxReconnects(0)); err == nil {
			nc.Close()
			t.Fatal("a derived name logged in with another token's secret")
		}
	})

	t.Run("a reload closes the connections of removed tokens", func(t *testing.T) {
		nc, _ := natsUser(t, url, "dash", "secret-read")
		closed := make(chan struct{})
		nc.SetClosedHandler(func(*nats.Conn) { close(closed) })
		set, err := auth.Parse([]byte(strings.Replace(natsAuthFile, `,
  {"name": "dash", "secret": "secret-read",  "role": "read"}`, "", 1)))
		if err != nil {
			t.Fatal(err)
		}
		if err := n.SetNATSAuth(&bus.ServerAuth{Tokens: set.Tokens(), NodePassword: "node-password"}); err != nil {
			t.Fatal(err)
		}
		select {
		case <-closed:
		case <-time.After(10 * time.Second):
			t.Fatal("the removed token's NATS connection is still open")
		}
		if nc, err := nats.Connect(url, nats.UserInfo("dash", "secret-read"), nats.MaxReconnects(0)); err == nil {
			nc.Close()
			t.Fatal("a removed token logged in")
		}
		kept, err := nats.Connect(url, nats.UserInfo("web", "secret-web"), nats.MaxReconnects(0))
		if err != nil {
			t.Fatalf("a kept token: %v", err)
		}
		kept.Close()
	})

	t.Run("an admin may not publish events either", func(t *testing.T) {
		nc, errs := natsUser(t, url, "ops", "secret-admin")
		nc.Publish(bus.EventSubject("web", api.EventDown), []byte(`{}`))
		wantViolation(t, errs, bus.EventSubject("web", api.EventDown))
		if _, err := nc.Request(bus.HeartbeatSubject("db"), heartbeatJSON("a1", "10.0.0.3:80"), 10*time.Second); err != nil {
			t.Fatalf("an admin heartbeat: %v", err)
		}
	})
}
