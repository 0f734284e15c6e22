package httpapi

import (
	"net/http"

	"github.com/discoverd/discoverd/h2server"
)

// MaxConcurrentStreams is the most requests in flight, SSE streams
// included, that one HTTP/2 connection may carry; a client that wants more
// opens another connection (Go's does so by itself). A connection's
// goroutines and buffers are shared by its streams, and a fan-out writes
// each connection's woken streams in one pass whatever their number, so a
// high limit makes each stream cheaper; the per-client limit
// (--max-conns-per-client, 1024 by default) still counts every stream.
const MaxConcurrentStreams = h2server.DefaultMaxConcurrentStreams

// EnableHTTP2 makes srv speak HTTP/2 beside HTTP/1.1: over TLS (ALPN h2)
// and in clear text (h2c with prior knowledge), so that many event streams
// share one connection. HTTP/2 is served by package h2server, whose
// connections write event streams without a goroutine each (sse_h2.go).
func EnableHTTP2(srv *http.Server) {
	(&h2server.Server{MaxConcurrentStreams: MaxConcurrentStreams}).Configure(srv)
}
