package httpapi

import "net/http"

// MaxConcurrentStreams is the most requests in flight, SSE streams
// included, that one HTTP/2 connection may carry; a client that wants more
// opens another connection (Go's does so by itself). Not more: net/http's
// HTTP/2 write scheduler visits every stream of a connection for each
// frame it sends, so a fan-out to n streams of one connection costs n²;
// at 1,024 streams per connection that took 40% of a node's CPU in a
// fan-out to 30,000 streams, at 100 it takes 14% (BENCHMARKS.md).
const MaxConcurrentStreams = 100

// EnableHTTP2 makes srv speak HTTP/2 beside HTTP/1.1: over TLS (ALPN h2)
// and in clear text (h2c with prior knowledge), so that many event streams
// share one connection.
func EnableHTTP2(srv *http.Server) {
	var p http.Protocols
	p.SetHTTP1(true)
	p.SetHTTP2(true)
	p.SetUnencryptedHTTP2(true)
	srv.Protocols = &p
	if srv.HTTP2 == nil {
		srv.HTTP2 = &http.HTTP2Config{}
	}
	srv.HTTP2.MaxConcurrentStreams = MaxConcurrentStreams
}
