package client

import (
	"net"
	"net/http"
	"strings"
	"sync"
	"time"
)

// h2cRetryAfter is how long a server that did not answer cleartext HTTP/2
// gets its streams over HTTP/1.1 before the client tries HTTP/2 again (it
// may have been upgraded).
const h2cRetryAfter = 5 * time.Minute

// h2cStreams carries the event streams of http:// servers over cleartext
// HTTP/2 (h2c), so that many watches share one connection instead of
// holding one each. A server that does not speak it (an older discoverd,
// or something in front of it) gets HTTP/1.1: where a stream fails over
// h2c and then opens over HTTP/1.1, the client remembers that for a while.
// (https:// servers negotiate HTTP/2 in the TLS handshake instead.)
type h2cStreams struct {
	hc        *http.Client
	transport *http.Transport

	mu sync.Mutex
	// http1Until holds the servers that answered over HTTP/1.1 only, until
	// when to keep using it.
	http1Until map[string]time.Time
}

func newH2CStreams() *h2cStreams {
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	tr := &http.Transport{
		// No HTTP proxy: h2c with prior knowledge does not pass one.
		DialContext: (&net.Dialer{
			Timeout:   2 * time.Second,
			KeepAlive: 30 * time.Second,
		}).DialContext,
		Protocols:             &p,
		IdleConnTimeout:       90 * time.Second,
		ResponseHeaderTimeout: 30 * time.Second,
	}
	return &h2cStreams{
		hc:         &http.Client{Transport: tr},
		transport:  tr,
		http1Until: map[string]time.Time{},
	}
}

// use reports whether a stream of server should go over h2c.
func (h *h2cStreams) use(server string) bool {
	if h == nil || !strings.HasPrefix(server, "http://") {
		return false
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	until, ok := h.http1Until[server]
	if ok && time.Now().After(until) {
		delete(h.http1Until, server)
		ok = false
	}
	return !ok
}

// http1Only records that server answered a stream over HTTP/1.1 after h2c
// failed.
func (h *h2cStreams) http1Only(server string) {
	h.mu.Lock()
	h.http1Until[server] = time.Now().Add(h2cRetryAfter)
	h.mu.Unlock()
}

func (h *h2cStreams) close() {
	if h != nil {
		h.transport.CloseIdleConnections()
	}
}
