package httpapi

import (
	"net"
	"net/http"
	"time"

	"github.com/discoverd/discoverd/api"
)

// headWriteTimeout bounds the write of a stream's response head. Events
// are written by the pool within rawWriteTimeout, then, for a client that
// did not take them, with no deadline, as net/http writes a stream: a
// reader that falls behind is closed as a slow subscriber, and must still
// get the error event that says so once it reads again.
const headWriteTimeout = 10 * time.Second

// serveRaw serves an HTTP/1.1 event stream on the connection itself, so
// that an idle stream costs a node no more than it must. net/http holds a
// 4 KiB read buffer, a 4 KiB write buffer, a 2 KiB chunking buffer and
// two goroutines (the handler's, with the deep stack it grew while it
// parsed the request and read the state, and a background reader) for
// every open response; a hijacked stream holds one shallow goroutine that
// waits for the client to go away, and no buffer while idle: its events
// are written by the handler's few pool writers (sse_pool.go). The body is the raw event stream, delimited by the
// connection's close (Connection: close), which every HTTP/1.1 client
// reads.
//
// It reports false, having done nothing, where the connection cannot be
// taken over (HTTP/2, a test recorder): the caller serves the stream then.
// On true the stream is served and closed by serveRaw's goroutines.
func (h *handler) serveRaw(w http.ResponseWriter, st Stream) bool {
	if w.Header().Get("Connection") != "" {
		return false
	}
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return false
	}
	bp := getBuf()
	b := append((*bp)[:0], "HTTP/1.1 200 OK\r\n"...)
	for k, vs := range w.Header() {
		for _, v := range vs {
			b = append(b, k...)
			b = append(b, ": "...)
			b = append(b, v...)
			b = append(b, "\r\n"...)
		}
	}
	b = append(b, "Connection: close\r\n\r\n"...)
	conn.SetWriteDeadline(time.Now().Add(headWriteTimeout))
	_, err = conn.Write(b)
	conn.SetWriteDeadline(time.Time{})
	*bp = b
	putBuf(bp)
	if err != nil {
		conn.Close()
		st.Close()
		return true
	}
	// The read and write buffers net/http handed over go with brw; a
	// client sends nothing more on an event stream, so what brw may hold
	// is of no use.
	_ = brw
	go waitGone(conn, st)
	if n, ok := notifierOf(st); ok {
		h.raw.add(conn, st, n)
	} else {
		go h.rawLoop(conn, st)
	}
	return true
}

// waitGone closes st and the connection once the client closes its end
// (or the connection fails), which ends rawLoop, even in a write.
func waitGone(conn net.Conn, st Stream) {
	var b [1]byte
	for {
		if _, err := conn.Read(b[:]); err != nil {
			st.Close()
			conn.Close()
			return
		}
	}
}

// rawLoop writes st's events to conn until st ends, then closes conn: a
// goroutine per stream, for streams that cannot notify a pool.
func (h *handler) rawLoop(conn net.Conn, st Stream) {
	defer conn.Close()
	defer st.Close()
	ticker := time.NewTicker(h.keepAlive)
	defer ticker.Stop()
	ready := st.Ready()
	var evs []api.Event
	for {
		select {
		case <-ticker.C:
			if _, err := conn.Write(sseKeepAlive); err != nil {
				return
			}
		case <-ready:
			var open bool
			evs, open = st.Take(evs[:0])
			if !writeEvents(conn, evs, open, st) || !open {
				return
			}
			reportWritten(st, len(evs))
			clear(evs)
			if cap(evs) > maxKeptEvents {
				evs = nil
			}
			ticker.Reset(h.keepAlive)
		}
	}
}
