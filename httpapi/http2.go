package httpapi

import "net/http"

// MaxConcurrentStreams is the most requests in flight, SSE streams
// included, that one HTTP/2 connection may carry; a client that wants more
// opens another connection. It matches the default per-client limit
// (--max-conns-per-client), so one connection can carry all a client may
// hold.
const MaxConcurrentStreams = 1024

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
