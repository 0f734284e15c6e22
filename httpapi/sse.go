package httpapi

import (
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/discoverd/discoverd/api"
)

const sseContentType = "text/event-stream"

var (
	sseContentTypeValue = []string{sseContentType}
	noCacheValue        = []string{"no-cache"}
	noBufferingValue    = []string{"no"}
)

// sseKeepAlive is the comment line sent on a silent stream.
var sseKeepAlive = []byte(":\n\n")

// appendSSEEvent appends ev as one SSE event: its index as the id, its JSON
// as the data.
func appendSSEEvent(dst []byte, ev *api.Event) []byte {
	dst = append(dst, "id: "...)
	dst = strconv.AppendUint(dst, ev.Index, 10)
	dst = append(dst, "\ndata: "...)
	dst = appendEvent(dst, ev)
	return append(dst, "\n\n"...)
}

// sharedEvents holds the SSE encoding of the events fanned out last, so
// that a fan-out to n streams encodes each event once, not n times. A slot
// is chosen by index and kind, as one entry's events (a leader's down and
// the new leader) go out together; an event is a hit only if it equals the
// one encoded, so a miss costs an encoding and never gives wrong bytes.
var sharedEvents [16]atomic.Pointer[encodedEvent]

type encodedEvent struct {
	ev  api.Event
	sse []byte
}

// sharedSSEEvent returns ev as one SSE event (appendSSEEvent's bytes). The
// bytes are shared: the caller must not change them.
func sharedSSEEvent(ev *api.Event) []byte {
	h := ev.Index*31 + uint64(len(ev.Kind))
	if len(ev.Kind) > 0 {
		h += uint64(ev.Kind[0])
	}
	slot := &sharedEvents[h%uint64(len(sharedEvents))]
	if e := slot.Load(); e != nil && e.ev == *ev {
		return e.sse
	}
	e := &encodedEvent{ev: *ev, sse: appendSSEEvent(nil, ev)}
	slot.Store(e)
	return e.sse
}

// appendSSEError appends the final event of a stream that failed.
func appendSSEError(dst []byte, e *api.Error) []byte {
	dst = append(dst, "event: error\ndata: "...)
	dst = appendError(dst, e)
	return append(dst, "\n\n"...)
}

// stream serves an SSE stream of service's events of the given kinds. It
// opens with the current state, or, with a Last-Event-ID header, with every
// event after that id (or a resync and the current state). It ends when the
// client goes away or the subscription ends; a subscription that ended with
// an error (a subscriber too slow, the node shutting down) sends a final
// "error" event carrying the api.Error.
func (h *handler) stream(w http.ResponseWriter, r *http.Request, service string, kinds api.KindMask) {
	if !h.read(w, r) {
		return
	}
	var lastID uint64
	resume := false
	if v := r.Header.Get(api.LastEventIDHeader); v != "" {
		n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
		if err != nil {
			h.fail(w, api.Errorf(api.CodeValidation, "%s %q is not an event id (a non-negative integer)", api.LastEventIDHeader, v))
			return
		}
		lastID, resume = n, true
	}
	st, err := h.b.Subscribe(service, kinds, lastID, resume)
	if err != nil {
		h.fail(w, err)
		return
	}
	st = h.revocable(r, st)
	hdr := w.Header()
	hdr["Content-Type"] = sseContentTypeValue
	hdr["Cache-Control"] = noCacheValue
	hdr["X-Accel-Buffering"] = noBufferingValue
	h.setIndex(w, 0)
	if r.ProtoMajor == 1 && h.serveRaw(w, st) {
		return
	}
	if r.ProtoMajor == 2 && h.serveH2(w, r, st) {
		return
	}
	defer st.Close()

	rc := http.NewResponseController(w)
	// A stream outlives any server write timeout meant for plain requests.
	_ = rc.SetWriteDeadline(time.Time{})
	w.WriteHeader(http.StatusOK)
	if err := rc.Flush(); err != nil {
		return
	}

	ready := st.Ready()
	done := r.Context().Done()
	ticker := time.NewTicker(h.keepAlive)
	defer ticker.Stop()
	// An idle stream holds no buffer: events are taken into evs and
	// encoded into a pooled buffer only while some are waiting.
	var evs []api.Event
	for {
		select {
		case <-done:
			return
		case <-ticker.C:
			if _, err := w.Write(sseKeepAlive); err != nil {
				return
			}
			if err := rc.Flush(); err != nil {
				return
			}
		case <-ready:
			var open bool
			evs, open = st.Take(evs[:0])
			if !writeEvents(w, evs, open, st) {
				return
			}
			n := len(evs)
			clear(evs)
			if cap(evs) > maxKeptEvents {
				evs = nil
			}
			if !open {
				// No flush of its own: net/http flushes what is left when the
				// handler returns, in the frame that ends the stream, so a
				// node ending 100,000 streams sends one frame each, not two.
				return
			}
			if err := rc.Flush(); err != nil {
				return
			}
			reportWritten(st, n)
			ticker.Reset(h.keepAlive)
		}
	}
}

// maxKeptEvents is the capacity of taken events a stream keeps between
// bursts; after a larger burst it lets the memory go.
const maxKeptEvents = 16

// writeEvents writes evs, and the stream's error when it ended (open
// false), in writes of up to chunkSize; it reports false when the client
// is gone.
func writeEvents(w io.Writer, evs []api.Event, open bool, st Stream) bool {
	bp := getBuf()
	defer putBuf(bp)
	buf := (*bp)[:0]
	defer func() { *bp = buf }()
	for i := range evs {
		buf = append(buf, sharedSSEEvent(&evs[i])...)
		if len(buf) >= chunkSize {
			if _, err := w.Write(buf); err != nil {
				return false
			}
			buf = buf[:0]
		}
	}
	if !open {
		if err := st.Err(); err != nil {
			buf = appendSSEError(buf, api.AsError(err))
		}
	}
	if len(buf) > 0 {
		if _, err := w.Write(buf); err != nil {
			return false
		}
	}
	return true
}

// reportWritten tells a Stream that wants to know (the node's, for its
// fan-out time metric) that its events went into the socket.
func reportWritten(st Stream, n int) {
	if wr, ok := st.(interface{ Written() }); ok && n > 0 {
		wr.Written()
	}
}
