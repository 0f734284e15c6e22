package client

import (
	"context"
	"net"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"sync/atomic"
	"testing"
	"time"

	"github.com/discoverd/discoverd/api"
)

// countDials makes c's h2c transport count the connections it opens.
func countDials(c *Client) *atomic.Int32 {
	var n atomic.Int32
	dial := c.streams.transport.DialContext
	c.streams.transport.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		n.Add(1)
		return dial(ctx, network, addr)
	}
	return &n
}

// watchAll opens a watch of each service and waits for its prelude.
func watchAll(t *testing.T, c *Client, ctx context.Context, services []string) {
	t.Helper()
	for _, svc := range services {
		w, err := c.Watch(ctx, svc)
		if err != nil {
			t.Fatalf("watch %s: %v", svc, err)
		}
		t.Cleanup(w.Close)
		for ev := range w.Events() {
			if ev.Kind == api.EventCurrent {
				break
			}
		}
	}
}

func TestWatchesShareOneHTTP2Connection(t *testing.T) {
	t.Parallel()
	s := startServer(t, time.Minute)
	c := New(s.URL())
	defer c.Close()
	dials := countDials(c)
	ctx := testCtx(t, 20*time.Second)
	var services []string
	for _, svc := range []string{"a", "b", "c", "d", "e", "f", "g", "h"} {
		if err := c.AddService(ctx, svc, nil); err != nil {
			t.Fatal(err)
		}
		services = append(services, svc, svc) // two watches of each
	}
	watchAll(t, c, ctx, services)
	if n := dials.Load(); n != 1 {
		t.Fatalf("%d watches opened %d connections, want 1 (HTTP/2)", len(services), n)
	}
}

func TestWatchFallsBackToHTTP1WithoutH2C(t *testing.T) {
	t.Parallel()
	s := startServer(t, time.Minute)
	// A plain HTTP/1.1 reverse proxy in front: it does not speak h2c.
	target, _ := url.Parse(s.URL())
	front := httptest.NewServer(httputil.NewSingleHostReverseProxy(target))
	t.Cleanup(front.Close)
	c := New(front.URL)
	defer c.Close()
	ctx := testCtx(t, 20*time.Second)
	if err := c.AddService(ctx, "web", nil); err != nil {
		t.Fatal(err)
	}
	watchAll(t, c, ctx, []string{"web", "web"})
	if c.streams.use(front.URL) {
		t.Fatal("the client still tries h2c with a server that answered over HTTP/1.1 only")
	}
}
