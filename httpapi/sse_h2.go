package httpapi

import (
	"net/http"
	"sync/atomic"
	"time"

	"github.com/discoverd/discoverd/connlimit"
	"github.com/discoverd/discoverd/h2server"
)

// h2EventStream is an SSE stream over HTTP/2 written by its connection's
// writer (h2server.Detach) rather than by a goroutine of its own: an idle
// stream holds its subscription and this, no goroutine and no buffer.
type h2EventStream struct {
	eventTaker
	pool *rawPool
	wake func()
	// release gives back the stream's slot of the per-client limit,
	// which the handler kept when it returned.
	release func()
	// lastWrite is when something was last written (Unix nanos), for the
	// keep-alive.
	lastWrite atomic.Int64
}

// serveH2 hands an HTTP/2 event stream to its connection. It reports
// false, having done nothing, when the response is not one of h2server's
// (a test recorder): the caller serves the stream then. On true the
// stream is served and closed by the connection.
func (h *handler) serveH2(w http.ResponseWriter, r *http.Request, st Stream) bool {
	n, ok := notifierOf(st)
	if !ok {
		return false
	}
	es := &h2EventStream{eventTaker: eventTaker{st: st}, pool: h.raw}
	es.lastWrite.Store(time.Now().UnixNano())
	wake, ok := h2server.Detach(w, es)
	if !ok {
		return false
	}
	es.wake = wake
	es.release = connlimit.Hold(r)
	h.raw.track(es)
	n.Notify(wake)
	return true
}

// Fill is h2server.Source's: the waiting events, the final error once the
// subscription ended, or a keep-alive when one is due.
func (es *h2EventStream) Fill(dst []byte) ([]byte, bool) {
	start := len(dst)
	dst, open, n := es.take(dst)
	if len(dst) > start {
		es.lastWrite.Store(time.Now().UnixNano())
	}
	// The bytes go into the connection's socket in the same pass of its
	// writer, right after the fill.
	reportWritten(es.st, n)
	return dst, open
}

// Done is h2server.Source's: the stream ended.
func (es *h2EventStream) Done() {
	es.st.Close()
	es.pool.untrack(es)
	if es.release != nil {
		es.release()
	}
}

func (es *h2EventStream) idleSince() int64 { return es.lastWrite.Load() }

func (es *h2EventStream) askKeepAlive() {
	es.keepAliveDue.Store(true)
	es.wake()
}
