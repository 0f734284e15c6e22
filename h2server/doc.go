// Package h2server serves HTTP/2 connections (TLS with ALPN "h2", and
// cleartext with prior knowledge) for a node's net/http server, in place of
// net/http's own HTTP/2 server.
//
// It exists for event streams. net/http gives every HTTP/2 response a
// handler goroutine and a 4 KiB write buffer for as long as it is open, and
// passes each frame of each stream from that goroutine to the connection's
// through a channel. A node holding 100,000 SSE streams then holds 100,000
// goroutines, and a fan-out to them costs 100,000 goroutine hand-offs and
// nearly as many socket writes. Here a handler may hand its open response
// to the connection (Detach) and return: the connection's one writer
// goroutine asks the stream's Source for bytes when the stream is woken,
// and writes the frames of every woken stream of the connection in one
// socket write. An idle detached stream holds a few hundred bytes and no
// goroutine.
//
// Every other request runs its handler in a goroutine of its own, as in
// net/http, with an http.ResponseWriter that supports Flush, read
// deadlines on the body (http.ResponseController) and Unwrap-aware
// Detach. Frames are read with golang.org/x/net/http2's Framer, which checks
// their syntax and decodes header blocks (HPACK, CONTINUATION, the header
// list size); frames are written by hand into one buffer per write.
//
// What it implements of RFC 9113: the preface and SETTINGS exchange, flow
// control both ways, stream states and the concurrent-stream limit
// (REFUSED_STREAM past it), PING, RST_STREAM, GOAWAY (on errors, on
// Shutdown, and after a response that set "Connection: close"), and an
// idle timeout. It does not push, and ignores priorities.
//
// It may import the standard library, golang.org/x/net's http2 (its Framer
// and hpack) and http/httpguts, and api.
package h2server
