package h2server

import (
	"context"
	"crypto/tls"
	"log"
	"net"
	"net/http"
	"sync"
	"time"
)

// Defaults of Server's fields.
const (
	// DefaultMaxConcurrentStreams is how many streams a client may hold
	// open on one connection. Each connection costs a node two goroutines
	// and its buffers, shared by its streams, so more streams per
	// connection make each cheaper; a client that wants more opens another
	// connection (Go's does so by itself). Writing a fan-out to them is
	// linear in the streams woken, whatever the limit.
	DefaultMaxConcurrentStreams = 1000
	// DefaultStreamWindow is the flow-control window a node gives each
	// stream's request body, and DefaultConnWindow the connection's: a
	// connection buffers at most DefaultConnWindow of bodies its handlers
	// have not read yet.
	DefaultStreamWindow = 256 << 10
	DefaultConnWindow   = 1 << 20
	// DefaultIdleTimeout closes a connection that has had no open stream
	// for that long, when the http.Server sets no IdleTimeout.
	DefaultIdleTimeout = 2 * time.Minute
	// DefaultWriteTimeout bounds one socket write of a connection: a
	// client that has taken nothing for that long while the node has
	// frames for it (it stopped reading, and its socket buffer is full)
	// loses the connection, rather than keeping its writer, its streams'
	// subscriptions and its handlers waiting for good. A client that
	// reads at all, however slowly, takes a write of at most 64 KiB within
	// it.
	DefaultWriteTimeout = time.Minute
	// DefaultMaxHeaderBytes bounds a request's header list, when the
	// http.Server sets no MaxHeaderBytes.
	DefaultMaxHeaderBytes = 1 << 20
)

// Server serves the HTTP/2 connections of one http.Server. The zero value
// takes the defaults above, and the http.Server's IdleTimeout,
// MaxHeaderBytes and ErrorLog.
type Server struct {
	// MaxConcurrentStreams is the limit announced in SETTINGS; 0 means
	// DefaultMaxConcurrentStreams.
	MaxConcurrentStreams uint32
	// WriteTimeout bounds one socket write; 0 means DefaultWriteTimeout.
	WriteTimeout time.Duration

	mu           sync.Mutex
	conns        map[*serverConn]struct{}
	shuttingDown bool
}

// Configure makes hs serve HTTP/2 with s: over TLS (ALPN h2; hs's TLS
// listener must offer "h2" in NextProtos) and in clear text with prior
// knowledge. HTTP/1.1 stays with net/http. On hs.Shutdown every connection
// gets GOAWAY and closes once its streams have ended; hs.Close cuts them.
func (s *Server) Configure(hs *http.Server) {
	var p http.Protocols
	p.SetHTTP1(true)
	p.SetHTTP2(true)
	p.SetUnencryptedHTTP2(true)
	hs.Protocols = &p
	if hs.TLSNextProto == nil {
		hs.TLSNextProto = make(map[string]func(*http.Server, *tls.Conn, http.Handler))
	}
	// net/http hands a TLS connection that chose h2 to the "h2" entry, and
	// a cleartext one that opened with the HTTP/2 preface to
	// "unencrypted_http2" (with the preface read, wrapped in a *tls.Conn
	// that only carries it).
	hs.TLSNextProto["h2"] = func(hs *http.Server, c *tls.Conn, h http.Handler) {
		state := c.ConnectionState()
		s.serve(hs, c, h, &state, false)
	}
	hs.TLSNextProto["unencrypted_http2"] = func(hs *http.Server, c *tls.Conn, h http.Handler) {
		u, ok := c.NetConn().(interface{ UnencryptedNetConn() net.Conn })
		if !ok {
			c.Close()
			return
		}
		s.serve(hs, u.UnencryptedNetConn(), h, nil, true)
	}
	hs.RegisterOnShutdown(s.shutdown)
}

// ConnCount is how many HTTP/2 connections are open.
func (s *Server) ConnCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

// StreamCount is how many streams are open over all connections, detached
// event streams included.
func (s *Server) StreamCount() int {
	s.mu.Lock()
	conns := make([]*serverConn, 0, len(s.conns))
	for sc := range s.conns {
		conns = append(conns, sc)
	}
	s.mu.Unlock()
	n := 0
	for _, sc := range conns {
		sc.mu.Lock()
		n += len(sc.streams)
		sc.mu.Unlock()
	}
	return n
}

func (s *Server) maxStreams() uint32 {
	if s.MaxConcurrentStreams == 0 {
		return DefaultMaxConcurrentStreams
	}
	return s.MaxConcurrentStreams
}

// serve runs one connection until it closes; net/http closes c when it
// returns.
func (s *Server) serve(hs *http.Server, c net.Conn, h http.Handler, state *tls.ConnectionState, sawPreface bool) {
	ctx := context.Background()
	if bc, ok := h.(interface{ BaseContext() context.Context }); ok {
		ctx = bc.BaseContext()
	}
	sc := newServerConn(s, hs, c, h, ctx, state)
	s.mu.Lock()
	if s.conns == nil {
		s.conns = make(map[*serverConn]struct{})
	}
	s.conns[sc] = struct{}{}
	shutting := s.shuttingDown
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.conns, sc)
		s.mu.Unlock()
	}()
	if shutting {
		sc.startDrain()
	}
	sc.run(sawPreface)
}

// shutdown sends every connection GOAWAY; each closes once its streams end.
func (s *Server) shutdown() {
	s.mu.Lock()
	s.shuttingDown = true
	conns := make([]*serverConn, 0, len(s.conns))
	for sc := range s.conns {
		conns = append(conns, sc)
	}
	s.mu.Unlock()
	for _, sc := range conns {
		sc.startDrain()
	}
}

func (sc *serverConn) logf(format string, args ...any) {
	if l := sc.hs.ErrorLog; l != nil {
		l.Printf(format, args...)
		return
	}
	log.Printf(format, args...)
}
