package client

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/discoverd/discoverd/api"
	"github.com/discoverd/discoverd/internal/testnode"
)

// A client with the cluster's CA and a token speaks HTTPS and NATS over TLS,
// and is held to its token's role.
func TestClientWithTokenAndCA(t *testing.T) {
	srv := testnode.Start(t, testnode.Options{TTL: time.Minute, NATS: true, Secure: true})
	addr := strings.TrimPrefix(srv.URL(), "https://")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	admin := NewWithOptions([]string{addr}, WithToken(testnode.AdminSecret), WithCAFile(srv.CAFile()), WithRetryTimeout(5*time.Second))
	defer admin.Close()
	if got := admin.Servers()[0]; !strings.HasPrefix(got, "https://") {
		t.Fatalf("a client with a CA reaches %s, not over https", got)
	}
	if err := admin.AddService(ctx, "web", nil); err != nil {
		t.Fatalf("admin AddService: %v", err)
	}
	if err := admin.AddService(ctx, "db", nil); err != nil {
		t.Fatalf("admin AddService: %v", err)
	}

	// The environment gives the same as the options.
	t.Setenv(TokenEnv, testnode.ServiceSecret)
	t.Setenv(CAEnv, srv.CAFile())
	svc := NewWithOptions([]string{addr}, WithNATS(srv.NATSURL()), WithRetryTimeout(5*time.Second))
	defer svc.Close()
	hb, err := svc.Register(ctx, "web", "10.0.0.1:80", nil)
	if err != nil {
		t.Fatalf("service token registering its own service: %v", err)
	}
	defer hb.Close()
	// NATS logs in with the token, over TLS.
	deadline := time.Now().Add(10 * time.Second)
	for nc := svc.natsConn(); nc == nil || !nc.IsConnected(); nc = svc.natsConn() {
		if time.Now().After(deadline) {
			t.Fatalf("the client's NATS connection is not up: %v", svc.natsErr)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, err := svc.natsConn().TLSConnectionState(); err != nil {
		t.Fatalf("NATS without TLS: %v", err)
	}
	if _, err := svc.Register(ctx, "db", "10.0.0.1:81", nil); !api.IsCode(err, api.CodeForbidden) {
		t.Fatalf("service token registering another service: %v, want forbidden", err)
	}
	w, err := svc.Watch(ctx, "web")
	if err != nil {
		t.Fatalf("watch: %v", err)
	}
	w.Close()

	t.Setenv(TokenEnv, "")
	t.Setenv(CAEnv, "")
	for _, tc := range []struct {
		name string
		opts []Option
		want func(error) bool
	}{
		{"no token", []Option{WithCAFile(srv.CAFile())}, func(err error) bool { return api.IsCode(err, api.CodeUnauthorized) }},
		{"unknown token", []Option{WithCAFile(srv.CAFile()), WithToken("secret-nobody")}, func(err error) bool { return api.IsCode(err, api.CodeUnauthorized) }},
		{"no CA", []Option{WithToken(testnode.AdminSecret)}, func(err error) bool {
			return err != nil && strings.Contains(err.Error(), "cannot verify the TLS certificate")
		}},
		{"missing CA file", []Option{WithCAFile("/nonexistent/ca.pem")}, func(err error) bool {
			return api.IsCode(err, api.CodeValidation) && strings.Contains(err.Error(), "CA file")
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := NewWithOptions([]string{srv.URL()}, append(tc.opts, WithRetryTimeout(time.Second))...)
			defer c.Close()
			ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			if _, err := c.Services(ctx); !tc.want(err) {
				t.Fatalf("got %v", err)
			}
		})
	}
}
