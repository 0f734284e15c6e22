package h2server_test

import (
	"testing"
	"time"

	"golang.org/x/net/http2"
)

// A client that stops reading loses its connection once a socket write
// has waited WriteTimeout: its detached streams end (Done) and its
// handlers are released, rather than waiting for good.
func TestWriteTimeoutEndsAStuckConnection(t *testing.T) {
	got := make(chan detached, 1)
	ts := startServer(t, detachHandler(got), serverOpts{})
	ts.h2.WriteTimeout = 200 * time.Millisecond
	// Windows large enough that flow control never stops the server: only
	// the client's full socket buffer does.
	rc := dialRaw(t, ts.addr, []http2.Setting{{ID: http2.SettingInitialWindowSize, Val: 1<<31 - 1}})
	if err := rc.fr.WriteWindowUpdate(0, 1<<31-1-65535); err != nil {
		t.Fatal(err)
	}
	rc.request(1, "GET", "/", true)
	d := recv(t, "the detached stream", got)
	// Far more than loopback's socket buffers hold, and never read.
	chunk := pattern(1 << 20)
	for range 24 {
		d.src.push(chunk)
	}
	d.wake()
	d.src.waitDone(t)
	waitUntil(t, "the connection to be dropped", func() bool { return ts.h2.ConnCount() == 0 })
}
