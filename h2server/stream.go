package h2server

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/http2"

	"github.com/discoverd/discoverd/api"
)

// A Source feeds a detached response (see Detach): the connection's writer
// calls it, never two calls at once.
type Source interface {
	// Fill appends to dst what the stream has to send now and reports
	// whether the stream stays open. It is called after the stream was
	// woken, once the client's flow-control window has room; it must not
	// block.
	Fill(dst []byte) (b []byte, open bool)
	// Done is called once when the stream has ended: Fill reported it
	// closed and its last bytes went out, the client reset it, or the
	// connection closed. It is not called with any lock of the connection
	// held.
	Done()
}

// Detach hands the response w (or the response it wraps: Unwrap is
// followed) to the connection, which writes the response head and then,
// each time wake is called, what src.Fill gives; the handler should return
// at once, and the stream stays open until Fill reports it closed. ok is
// false, and nothing is done, when w is not an HTTP/2 response of this
// package or its head or some body was already written: the caller serves
// the stream itself then.
//
// wake may be called from any goroutine, any number of times; it only
// queues the stream for the writer.
func Detach(w http.ResponseWriter, src Source) (wake func(), ok bool) {
	for {
		switch rw := w.(type) {
		case *responseWriter:
			return rw.detach(src)
		case interface{ Unwrap() http.ResponseWriter }:
			w = rw.Unwrap()
		default:
			return nil, false
		}
	}
}

// stream is one request and its response. The fields after sc are guarded
// by sc.mu, except those the comments give to one goroutine.
type stream struct {
	sc *serverConn
	id uint32

	sendWindow int64
	recvWindow int64
	// remoteClosed is set once the client has ended its side.
	remoteClosed bool
	// queued is set while the stream is in sc.ready; connBlocked, while
	// it is in sc.connBlocked.
	queued      bool
	connBlocked bool
	// closed is set once the stream left sc.streams (both sides ended, or
	// reset); closeErr says why, for a handler still writing.
	closed   bool
	closeErr error

	// head is the response head, set by the handler and cleared by the
	// writer as it encodes it.
	head *responseHead
	// out is body the handler wrote and the writer has yet to send;
	// endOut, that the handler has finished (END_STREAM after out).
	out    []byte
	endOut bool
	// endSent is set once END_STREAM is encoded.
	endSent bool
	// drained has room for one signal: out has room again, or the stream
	// closed.
	drained chan struct{}

	// A detached stream's source; fillDue is set when it was woken and
	// not yet filled, pending holds what it gave beyond the flow-control
	// windows, and srcEnded that it reported the stream closed.
	src      Source
	fillDue  bool
	pending  []byte
	srcEnded bool
	srcDone  bool // src.Done is due or called

	body        *requestBody
	cancel      context.CancelFunc
	declaredLen int64
	received    int64
}

type responseHead struct {
	status int
	header http.Header
}

func (s *stream) hasOutputLocked() bool {
	return s.head != nil || len(s.out) > 0 || (s.endOut && !s.endSent) || len(s.pending) > 0 ||
		s.fillDue || (s.srcEnded && !s.endSent)
}

// wakeSource queues a detached stream to be filled.
func (s *stream) wakeSource() {
	sc := s.sc
	sc.mu.Lock()
	if !s.closed {
		s.fillDue = true
		sc.queueLocked(s)
	}
	sc.mu.Unlock()
}

// closeStreamLocked removes s, ends its request's context and body, wakes
// a handler waiting to write, and queues its Source's Done.
func (sc *serverConn) closeStreamLocked(s *stream, err error) {
	if s.closed {
		return
	}
	s.closed = true
	s.closeErr = err
	delete(sc.streams, s.id)
	if s.cancel != nil {
		s.cancel()
	}
	if s.body != nil {
		if err == nil {
			err = errStreamDone
		}
		s.body.fail(err)
	}
	select {
	case s.drained <- struct{}{}:
	default:
	}
	s.head, s.out, s.pending = nil, nil, nil
	if s.src != nil && !s.srcDone {
		s.srcDone = true
		sc.doneDue = append(sc.doneDue, s.src)
		sc.signal()
	}
	if len(sc.streams) == 0 {
		if sc.draining {
			sc.closeAfterWrite = true
			sc.signal()
		} else if sc.idleTimer != nil && !sc.closed {
			sc.idleTimer.Reset(sc.idleTimeout)
		}
	}
}

var errStreamDone = errors.New("h2server: the stream has ended")

// Headers a request or response may not carry over HTTP/2 (RFC 9113
// 8.2.2).
func connectionSpecific(name string) bool {
	switch name {
	case "connection", "proxy-connection", "keep-alive", "transfer-encoding", "upgrade":
		return true
	}
	return false
}

// onHeaders opens a stream, or takes a request's trailers.
func (sc *serverConn) onHeaders(f *http2.MetaHeadersFrame) error {
	id := f.StreamID
	if id%2 == 0 {
		return connError(http2.ErrCodeProtocol, "client stream id %d is even", id)
	}
	sc.mu.Lock()
	if s := sc.streams[id]; s != nil {
		// Trailers: they end the body; their fields are not kept.
		switch {
		case s.remoteClosed:
			sc.resetStreamLocked(s, http2.ErrCodeStreamClosed)
		case !f.StreamEnded():
			sc.resetStreamLocked(s, http2.ErrCodeProtocol)
		default:
			s.remoteClosed = true
			if s.declaredLen >= 0 && s.received != s.declaredLen {
				sc.resetStreamLocked(s, http2.ErrCodeProtocol)
				break
			}
			if s.body != nil {
				s.body.write(nil, true)
			}
			sc.maybeCloseLocked(s)
		}
		sc.mu.Unlock()
		return nil
	}
	sc.mu.Unlock()
	if id <= sc.maxClientID {
		return connError(http2.ErrCodeStreamClosed, "HEADERS on closed stream %d", id)
	}
	sc.mu.Lock()
	sc.maxClientID = id
	refuse := sc.closed || (sc.goAwaySent && id > sc.lastID) || uint32(len(sc.streams)) >= sc.maxStreams
	if refuse {
		sc.ctl = appendRSTStream(sc.ctl, id, http2.ErrCodeRefusedStream)
		sc.signal()
	}
	sc.mu.Unlock()
	if refuse {
		return nil
	}

	req, code := sc.newRequest(f)
	s := &stream{
		sc:          sc,
		id:          id,
		recvWindow:  DefaultStreamWindow,
		drained:     make(chan struct{}, 1),
		declaredLen: -1,
	}
	if req == nil && code != 0 {
		sc.resetStream(id, code)
		return nil
	}
	if f.StreamEnded() {
		s.remoteClosed = true
	}
	var w *responseWriter
	if req != nil {
		s.declaredLen = req.ContentLength
		if !s.remoteClosed {
			s.body = &requestBody{sc: sc, s: s, wake: make(chan struct{}, 1)}
			req.Body = s.body
		} else {
			req.Body = http.NoBody
			if req.ContentLength > 0 {
				sc.resetStream(id, http2.ErrCodeProtocol)
				return nil
			}
			req.ContentLength = 0
		}
		var ctx context.Context
		ctx, s.cancel = context.WithCancel(sc.baseCtx)
		req = req.WithContext(ctx)
		w = &responseWriter{s: s, isHead: req.Method == http.MethodHead}
	}
	sc.mu.Lock()
	s.sendWindow = sc.peerWindow
	sc.streams[id] = s
	sc.mu.Unlock()
	if req == nil {
		// The header list was larger than allowed.
		w = &responseWriter{s: s}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusRequestHeaderFieldsTooLarge)
		b, _ := json.Marshal(api.Errorf(api.CodeValidation, "the request's header list is larger than %d bytes, the most this node reads", sc.maxHeaderBytes))
		w.Write(append(b, '\n'))
		w.finish()
		return nil
	}
	go sc.runHandler(s, w, req)
	return nil
}

// newRequest makes the request of a HEADERS frame. A nil request with code
// 0 means the header list was too large (answered 431); with a code, the
// stream is reset with it.
func (sc *serverConn) newRequest(f *http2.MetaHeadersFrame) (*http.Request, http2.ErrCode) {
	if f.Truncated {
		return nil, 0
	}
	method := f.PseudoValue("method")
	path := f.PseudoValue("path")
	scheme := f.PseudoValue("scheme")
	authority := f.PseudoValue("authority")
	if f.PseudoValue("protocol") != "" {
		return nil, http2.ErrCodeProtocol // no extended CONNECT
	}
	connect := method == http.MethodConnect
	switch {
	case method == "":
		return nil, http2.ErrCodeProtocol
	case connect:
		if path != "" || scheme != "" || authority == "" {
			return nil, http2.ErrCodeProtocol
		}
	case path == "" || scheme == "":
		return nil, http2.ErrCodeProtocol
	case path[0] != '/' && !(path == "*" && method == http.MethodOptions):
		return nil, http2.ErrCodeProtocol
	}
	header := make(http.Header, len(f.Fields))
	var cookies []string
	contentLength := int64(-1)
	for _, hf := range f.RegularFields() {
		name := hf.Name
		if connectionSpecific(name) || (name == "te" && hf.Value != "trailers") {
			return nil, http2.ErrCodeProtocol
		}
		switch name {
		case "cookie":
			cookies = append(cookies, hf.Value)
			continue
		case "content-length":
			n, err := strconv.ParseInt(hf.Value, 10, 64)
			if err != nil || n < 0 || (contentLength >= 0 && n != contentLength) {
				return nil, http2.ErrCodeProtocol
			}
			contentLength = n
		case "host":
			if authority == "" {
				authority = hf.Value
			}
		}
		key := canonicalKey(name)
		header[key] = append(header[key], hf.Value)
	}
	if len(cookies) > 0 {
		header["Cookie"] = []string{strings.Join(cookies, "; ")}
	}
	var u *url.URL
	requestURI := path
	if connect {
		u = &url.URL{Host: authority}
		requestURI = authority
	} else {
		var err error
		if u, err = url.ParseRequestURI(path); err != nil {
			return nil, http2.ErrCodeProtocol
		}
	}
	return &http.Request{
		Method:        method,
		URL:           u,
		Proto:         "HTTP/2.0",
		ProtoMajor:    2,
		Header:        header,
		ContentLength: contentLength,
		Host:          authority,
		RemoteAddr:    sc.remote,
		RequestURI:    requestURI,
		TLS:           sc.tlsState,
	}, 0
}

// commonKeys spares the canonicalization of the usual request headers.
var commonKeys = func() map[string]string {
	m := map[string]string{}
	for _, k := range []string{"Accept", "Accept-Encoding", "Accept-Language", "Authorization",
		"Cache-Control", "Content-Length", "Content-Type", "Host", "If-None-Match", "Last-Event-Id",
		"Origin", "Referer", "User-Agent", "X-Forwarded-For", "Discoverd-Forwarded", "Discoverd-Relayed",
		"Discoverd-Token", "Discoverd-Index"} {
		m[strings.ToLower(k)] = http.CanonicalHeaderKey(k)
	}
	return m
}()

func canonicalKey(lower string) string {
	if k, ok := commonKeys[lower]; ok {
		return k
	}
	return http.CanonicalHeaderKey(lower)
}

// runHandler serves one request on a goroutine of its own.
func (sc *serverConn) runHandler(s *stream, w *responseWriter, req *http.Request) {
	defer func() {
		if v := recover(); v != nil {
			if v != http.ErrAbortHandler {
				sc.logf("h2server: panic serving %s %s: %v\n%s", req.Method, req.URL.Path, v, debug.Stack())
			}
			sc.mu.Lock()
			if !s.closed {
				sc.resetStreamLocked(s, http2.ErrCodeInternal)
			}
			sc.mu.Unlock()
			w.done()
			return
		}
		w.finish()
	}()
	sc.handler.ServeHTTP(w, req)
}

// Limits of a response's body on its way out.
const (
	// handOffSize is how much body a handler writes before it is handed
	// to the connection without a Flush.
	handOffSize = 16 << 10
	// maxOut is how much handed-off body may wait for the writer before
	// the handler's writes wait.
	maxOut = 64 << 10
)

// responseWriter is the http.ResponseWriter of a stream's handler.
type responseWriter struct {
	s           *stream
	isHead      bool
	header      http.Header
	status      int
	wroteHeader bool
	committed   bool // the head was handed to the connection
	detached    bool
	closeConn   bool
	buf         []byte
}

func (w *responseWriter) Header() http.Header {
	if w.header == nil {
		w.header = make(http.Header)
	}
	return w.header
}

func (w *responseWriter) WriteHeader(code int) {
	if w.wroteHeader || w.detached {
		return
	}
	if code < 100 || code > 999 {
		panic("h2server: invalid WriteHeader code " + strconv.Itoa(code))
	}
	if code < 200 {
		return // informational answers are not sent
	}
	w.wroteHeader = true
	w.status = code
}

func bodyAllowed(status int) bool {
	return status != http.StatusNoContent && status != http.StatusNotModified
}

func (w *responseWriter) Write(p []byte) (int, error) { return writeBody(w, p) }

func (w *responseWriter) WriteString(p string) (int, error) { return writeBody(w, p) }

// writeBody is Write and WriteString: the body is gathered in w.buf and
// handed to the connection every handOffSize (or on Flush, or when the
// handler returns).
func writeBody[T string | []byte](w *responseWriter, p T) (int, error) {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if w.detached {
		return 0, errDetached
	}
	if !bodyAllowed(w.status) {
		return 0, http.ErrBodyNotAllowed
	}
	if w.isHead && w.committed {
		return len(p), nil
	}
	// A HEAD response's body is gathered like any other until the head
	// goes (its Content-Type and Content-Length are those of the body a
	// GET would get, as with net/http), then dropped.
	if w.buf == nil {
		w.buf = getBuf()
	}
	w.buf = append(w.buf, p...)
	if len(w.buf) >= handOffSize {
		if err := w.handOff(false); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}

var errDetached = errors.New("h2server: the response was detached")

// Flush sends what was written; it does not wait for the client.
func (w *responseWriter) Flush() { w.FlushError() }

// FlushError is Flush for http.ResponseController.
func (w *responseWriter) FlushError() error {
	if w.detached {
		return errDetached
	}
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	return w.handOff(false)
}

// SetReadDeadline bounds the reads of the request body.
func (w *responseWriter) SetReadDeadline(t time.Time) error {
	if b := w.s.body; b != nil {
		b.setDeadline(t)
	}
	return nil
}

// SetWriteDeadline is accepted and has no effect: a response's writes wait
// only for the connection's writer, never for one client's socket alone.
func (w *responseWriter) SetWriteDeadline(time.Time) error { return nil }

// EnableFullDuplex: an HTTP/2 handler may always read the body while it
// writes.
func (w *responseWriter) EnableFullDuplex() error { return nil }

// handOff gives the head (first time) and the written body to the
// connection; end says the handler has finished.
func (w *responseWriter) handOff(end bool) error {
	s := w.s
	sc := s.sc
	sc.mu.Lock()
	for !s.closed && len(s.out) >= maxOut {
		sc.mu.Unlock()
		<-s.drained
		sc.mu.Lock()
	}
	if s.closed {
		err := s.closeErr
		sc.mu.Unlock()
		w.releaseBuf()
		if err == nil {
			err = errStreamDone
		}
		return err
	}
	if !w.committed {
		w.committed = true
		s.head = w.makeHead(end)
	}
	if w.isHead {
		w.buf = w.buf[:0]
	}
	if len(w.buf) > 0 {
		if s.out == nil {
			s.out, w.buf = w.buf, nil
		} else {
			s.out = append(s.out, w.buf...)
			w.buf = w.buf[:0]
		}
	}
	if end {
		s.endOut = true
	}
	sc.queueLocked(s)
	sc.mu.Unlock()
	return nil
}

// makeHead takes the header map for the head; later changes to it are
// not sent, as with net/http.
func (w *responseWriter) makeHead(end bool) *responseHead {
	h := w.header
	w.header = nil
	if h == nil {
		h = make(http.Header, 2)
	}
	if v, ok := h["Connection"]; ok {
		if len(v) > 0 && strings.EqualFold(v[0], "close") {
			w.closeConn = true
		}
	}
	if _, ok := h["Date"]; !ok {
		h["Date"] = []string{time.Now().UTC().Format(http.TimeFormat)}
	}
	if bodyAllowed(w.status) {
		if _, ok := h["Content-Type"]; !ok && len(w.buf) > 0 && h.Get("Content-Encoding") == "" {
			h["Content-Type"] = []string{http.DetectContentType(w.buf)}
		}
		// A HEAD handler that wrote nothing does not say the body is
		// empty.
		if _, ok := h["Content-Length"]; !ok && end && (len(w.buf) > 0 || !w.isHead) {
			h["Content-Length"] = []string{strconv.Itoa(len(w.buf))}
		}
	}
	return &responseHead{status: w.status, header: h}
}

// finish ends the response after its handler returned.
func (w *responseWriter) finish() {
	s := w.s
	if !w.detached {
		if !w.wroteHeader {
			w.WriteHeader(http.StatusOK)
		}
		w.handOff(true)
	}
	w.done()
	if w.closeConn {
		s.sc.startDrain()
	}
}

// done releases what the handler held: its buffer, the request's context
// and the body's unread data.
func (w *responseWriter) done() {
	w.releaseBuf()
	s := w.s
	if s.cancel != nil {
		s.cancel()
	}
	if s.body != nil {
		s.body.Close()
	}
}

func (w *responseWriter) releaseBuf() {
	if w.buf != nil {
		putBuf(w.buf)
		w.buf = nil
	}
}

// detach hands the stream to src (see Detach).
func (w *responseWriter) detach(src Source) (func(), bool) {
	// Body bytes written but not yet handed off count as sent: detaching
	// would drop them.
	if w.committed || w.detached || w.isHead || len(w.buf) > 0 {
		return nil, false
	}
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	s := w.s
	sc := s.sc
	sc.mu.Lock()
	if s.closed {
		sc.mu.Unlock()
		return nil, false
	}
	w.detached = true
	w.committed = true
	s.head = w.makeHead(false)
	s.src = src
	s.fillDue = true
	sc.queueLocked(s)
	sc.mu.Unlock()
	w.releaseBuf()
	return s.wakeSource, true
}

// bufPool holds handlers' body buffers.
var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

func getBuf() []byte { return (*bufPool.Get().(*[]byte))[:0] }

func putBuf(b []byte) {
	if cap(b) > 64<<10 {
		return
	}
	b = b[:0]
	bufPool.Put(&b)
}

// requestBody is a request's body as its DATA frames arrive.
type requestBody struct {
	sc *serverConn
	s  *stream
	// wake has room for one signal: data, the end, or the deadline came.
	wake chan struct{}

	mu       sync.Mutex
	buf      []byte
	eof      bool
	err      error
	closed   bool // the handler is done with it: data is dropped
	deadline time.Time
	timer    *time.Timer
	timedOut bool
}

// write adds data from the reader; it reports false when no one will read
// it (the caller gives the window back).
func (b *requestBody) write(data []byte, end bool) bool {
	b.mu.Lock()
	if b.closed || b.err != nil {
		b.mu.Unlock()
		return false
	}
	b.buf = append(b.buf, data...)
	if end {
		b.eof = true
	}
	b.mu.Unlock()
	select {
	case b.wake <- struct{}{}:
	default:
	}
	return true
}

// fail ends the body with err for its reader.
func (b *requestBody) fail(err error) {
	b.mu.Lock()
	if b.err == nil && !b.eof {
		b.err = err
	}
	b.mu.Unlock()
	select {
	case b.wake <- struct{}{}:
	default:
	}
}

func (b *requestBody) Read(p []byte) (int, error) {
	for {
		b.mu.Lock()
		if len(b.buf) > 0 {
			n := copy(p, b.buf)
			b.buf = b.buf[n:]
			if len(b.buf) == 0 {
				b.buf = nil
			}
			b.mu.Unlock()
			b.credit(n)
			return n, nil
		}
		switch {
		case b.eof:
			b.mu.Unlock()
			return 0, io.EOF
		case b.err != nil:
			err := b.err
			b.mu.Unlock()
			return 0, err
		case b.closed:
			b.mu.Unlock()
			return 0, http.ErrBodyReadAfterClose
		case b.timedOut:
			b.mu.Unlock()
			return 0, os.ErrDeadlineExceeded
		}
		b.mu.Unlock()
		<-b.wake
	}
}

// credit gives n read bytes of window back to the client.
func (b *requestBody) credit(n int) {
	if n == 0 {
		return
	}
	sc := b.sc
	sc.mu.Lock()
	sc.creditLocked(b.s, int64(n))
	sc.mu.Unlock()
}

// Close drops the body's unread data, giving its window back.
func (b *requestBody) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	n := len(b.buf)
	b.buf = nil
	if b.timer != nil {
		b.timer.Stop()
	}
	b.mu.Unlock()
	b.credit(n)
	select {
	case b.wake <- struct{}{}:
	default:
	}
	return nil
}

func (b *requestBody) setDeadline(t time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.deadline = t
	b.timedOut = false
	if b.timer != nil {
		b.timer.Stop()
		b.timer = nil
	}
	if t.IsZero() {
		return
	}
	d := time.Until(t)
	if d <= 0 {
		b.timedOut = true
		select {
		case b.wake <- struct{}{}:
		default:
		}
		return
	}
	b.timer = time.AfterFunc(d, func() {
		b.mu.Lock()
		if b.deadline.Equal(t) {
			b.timedOut = true
		}
		b.mu.Unlock()
		select {
		case b.wake <- struct{}{}:
		default:
		}
	})
}
