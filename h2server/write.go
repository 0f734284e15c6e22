package h2server

import (
	"bytes"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/http/httpguts"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// writeChunk is how much the writer gathers before a socket write when
// many streams are ready: a fan-out's frames go out in writes of this
// size, not one per stream.
const writeChunk = 64 << 10

// writeBufs are the writers' socket buffers, held only while a writer has
// work, so that an idle connection holds none.
var writeBufs = sync.Pool{New: func() any { b := make([]byte, 0, writeChunk+maxFrameSize+64); return &b }}

// writer is the state of a connection's writer goroutine.
type writer struct {
	sc    *serverConn
	enc   *hpack.Encoder
	block bytes.Buffer
	batch []*stream
	// fill is scratch space for Sources' bytes.
	fill []byte
	buf  []byte
	err  error
}

// writeLoop writes the connection's frames until it closes.
func (sc *serverConn) writeLoop() {
	defer close(sc.writerDone)
	w := &writer{sc: sc}
	w.enc = hpack.NewEncoder(&w.block)
	for {
		sc.mu.Lock()
		for len(sc.ctl) == 0 && len(sc.ready) == 0 && len(sc.doneDue) == 0 && !sc.closed && !sc.closeAfterWrite {
			sc.mu.Unlock()
			<-sc.wake
			sc.mu.Lock()
		}
		if sc.closed {
			sc.mu.Unlock()
			return
		}
		bp := writeBufs.Get().(*[]byte)
		w.buf = append((*bp)[:0], sc.ctl...)
		if cap(sc.ctl) > 4096 {
			sc.ctl = nil
		} else {
			sc.ctl = sc.ctl[:0]
		}
		w.batch = append(w.batch[:0], sc.ready...)
		clear(sc.ready)
		sc.ready = sc.ready[:0]
		for _, s := range w.batch {
			s.queued = false
		}
		done := sc.doneDue
		sc.doneDue = nil
		if sc.tableSizeSet {
			w.enc.SetMaxDynamicTableSizeLimit(sc.tableSize)
			sc.tableSizeSet = false
		}
		sc.mu.Unlock()

		for _, d := range done {
			d.Done()
		}
		for i, s := range w.batch {
			w.stream(s)
			w.batch[i] = nil
			if len(w.buf) >= writeChunk {
				w.flush()
			}
		}
		w.flush()
		*bp = w.buf[:0]
		w.buf = nil
		writeBufs.Put(bp)
		if cap(w.fill) > writeChunk {
			w.fill = nil
		}
		if w.err != nil {
			sc.close(true)
			return
		}
		sc.mu.Lock()
		closeNow := sc.closeAfterWrite && len(sc.ctl) == 0 && len(sc.ready) == 0
		sc.mu.Unlock()
		if closeNow {
			sc.close(true)
			return
		}
	}
}

// flush writes the gathered frames.
func (w *writer) flush() {
	if len(w.buf) > 0 && w.err == nil {
		w.sc.conn.SetWriteDeadline(time.Now().Add(w.sc.writeTimeout))
		_, w.err = w.sc.conn.Write(w.buf)
	}
	w.buf = w.buf[:0]
}

// stream encodes what s has to send, as far as the flow-control windows
// allow.
func (w *writer) stream(s *stream) {
	sc := w.sc
	sc.mu.Lock()
	if s.closed {
		sc.mu.Unlock()
		return
	}
	// A detached stream is filled outside the lock: its Source takes its
	// own locks.
	fill := s.src != nil && s.fillDue && !s.srcEnded && len(s.pending) == 0 && s.sendWindow > 0 && sc.sendWindow > 0
	if fill {
		s.fillDue = false
	}
	sc.mu.Unlock()
	var filled []byte
	if fill {
		var open bool
		w.fill, open = s.src.Fill(w.fill[:0])
		filled = w.fill
		sc.mu.Lock()
		if !open {
			s.srcEnded = true
		}
		if s.closed {
			sc.mu.Unlock()
			return
		}
	} else {
		sc.mu.Lock()
	}
	defer sc.mu.Unlock()

	if s.head != nil {
		end := s.endOut && len(s.out) == 0
		w.buf = appendHeaders(w.buf, s.id, w.encodeHead(s.head), end)
		s.head = nil
		if end {
			w.ended(s)
			return
		}
	}
	if s.src != nil {
		// pending (left over from an earlier fill) goes first; there is no
		// fill while some is pending.
		data := s.pending
		if len(data) == 0 {
			data = filled
		}
		n, blocked := w.data(s, data, s.srcEnded)
		switch {
		case n == len(data) && !blocked:
			s.pending = nil
		case len(s.pending) > 0:
			s.pending = s.pending[n:]
		default:
			s.pending = append([]byte(nil), data[n:]...)
		}
		switch {
		case s.endSent:
			w.ended(s)
		case !s.fillDue || len(s.pending) > 0 || s.srcEnded:
		case s.sendWindow > 0 && sc.sendWindow > 0:
			// Woken again while it was filled: the next round fills it.
			sc.queueLocked(s)
		case s.sendWindow > 0:
			// Woken with the connection's window spent: its WINDOW_UPDATE
			// queues s again. Queued now, s would keep the writer
			// spinning with nothing to send.
			sc.blockOnConnLocked(s)
		default:
			// The stream's own window is spent: its WINDOW_UPDATE (or
			// SETTINGS) queues it again, as fillDue is set.
		}
		return
	}
	n, _ := w.data(s, s.out, s.endOut)
	if n > 0 {
		s.out = s.out[n:]
		if len(s.out) == 0 {
			putBuf(s.out[:0])
			s.out = nil
		}
		select {
		case s.drained <- struct{}{}:
		default:
		}
	}
	if s.endSent {
		w.ended(s)
	}
}

// data appends as much of p as the windows allow as DATA frames of s, with
// END_STREAM after the last byte when end is set. It reports how much it
// took and whether a window stopped it.
func (w *writer) data(s *stream, p []byte, end bool) (int, bool) {
	sc := w.sc
	allow := min(s.sendWindow, sc.sendWindow)
	n := len(p)
	blocked := false
	if int64(n) > allow {
		n = int(max(allow, 0))
		blocked = true
		if sc.sendWindow <= s.sendWindow {
			sc.blockOnConnLocked(s)
		}
	}
	if n > 0 || (end && !blocked) {
		w.buf = appendData(w.buf, s.id, p[:n], end && !blocked)
		s.sendWindow -= int64(n)
		sc.sendWindow -= int64(n)
		if end && !blocked {
			s.endSent = true
		}
	}
	return n, blocked
}

// blockOnConnLocked puts s, once, in the streams a WINDOW_UPDATE of the
// connection queues again. Once: a stream woken often while the client
// reads nothing would otherwise add itself at each wake.
func (sc *serverConn) blockOnConnLocked(s *stream) {
	if !s.connBlocked {
		s.connBlocked = true
		sc.connBlocked = append(sc.connBlocked, s)
	}
}

// ended closes s once its END_STREAM is encoded. A client that has not
// ended its side (a body it is still sending) is told to stop.
func (w *writer) ended(s *stream) {
	s.endSent = true
	if !s.remoteClosed {
		w.buf = appendRSTStream(w.buf, s.id, http2.ErrCodeNo)
	}
	w.sc.closeStreamLocked(s, nil)
}

// maybeCloseLocked closes s once both sides have ended.
func (sc *serverConn) maybeCloseLocked(s *stream) {
	if s.endSent && s.remoteClosed {
		sc.closeStreamLocked(s, nil)
	}
}

// encodeHead HPACK-encodes a response head.
func (w *writer) encodeHead(h *responseHead) []byte {
	w.block.Reset()
	w.enc.WriteField(hpack.HeaderField{Name: ":status", Value: statusText(h.status)})
	for k, vs := range h.header {
		name := lowerKey(k)
		if connectionSpecific(name) || name == "te" || !httpguts.ValidHeaderFieldName(k) {
			continue
		}
		for _, v := range vs {
			if !httpguts.ValidHeaderFieldValue(v) {
				continue
			}
			w.enc.WriteField(hpack.HeaderField{Name: name, Value: v})
		}
	}
	return w.block.Bytes()
}

func statusText(code int) string {
	switch code {
	case http.StatusOK:
		return "200"
	case http.StatusNotFound:
		return "404"
	}
	return strconv.Itoa(code)
}

// lowerKeys spares lowering the usual response headers.
var lowerKeys = func() map[string]string {
	m := map[string]string{}
	for _, k := range []string{"Cache-Control", "Content-Length", "Content-Type", "Date",
		"Discoverd-Index", "Retry-After", "X-Accel-Buffering", "Location", "Last-Modified",
		"Etag", "Vary", "Content-Encoding", "Accept-Ranges", "X-Content-Type-Options"} {
		m[k] = strings.ToLower(k)
	}
	return m
}()

func lowerKey(k string) string {
	if l, ok := lowerKeys[k]; ok {
		return l
	}
	return strings.ToLower(k)
}
