package h2server

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

const (
	clientPreface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
	// initialWindow is RFC 9113's window before any SETTINGS or
	// WINDOW_UPDATE, both ways.
	initialWindow = 65535
	maxWindow     = 1<<31 - 1
	// maxFrameSize is the largest frame payload a node reads and writes:
	// the protocol's minimum, which every peer accepts.
	maxFrameSize = 16384
	// prefaceTimeout bounds the wait for the client's preface and first
	// SETTINGS.
	prefaceTimeout = 10 * time.Second
	// goAwayFlushTimeout bounds the wait for a GOAWAY to be written before
	// a failed connection is closed.
	goAwayFlushTimeout = time.Second
)

// serverConn is one HTTP/2 connection. Its reader runs on the goroutine
// net/http gave it (run); its writer (writeLoop) is the only goroutine that
// writes to the socket or uses the HPACK encoder, so frames go out whole
// and in the order they were encoded.
type serverConn struct {
	srv      *Server
	hs       *http.Server
	conn     net.Conn
	handler  http.Handler
	baseCtx  context.Context
	tlsState *tls.ConnectionState
	remote   string
	fr       *http2.Framer

	maxStreams     uint32
	maxHeaderBytes uint32
	idleTimeout    time.Duration
	writeTimeout   time.Duration

	// Reader-only state. maxClientID, the highest stream id the client
	// has opened, is written only by the reader, under mu: a GOAWAY sent
	// from another goroutine (Shutdown, the idle timer, a handler's
	// "Connection: close") reads it under mu.
	maxClientID uint32
	sawSettings bool

	// wake has room for one signal: the writer has work.
	wake       chan struct{}
	writerDone chan struct{}

	mu sync.Mutex
	// streams are the open streams by id.
	streams map[uint32]*stream
	// ctl holds encoded frames that belong to no stream's output
	// (SETTINGS and PING acknowledgements, WINDOW_UPDATE, RST_STREAM,
	// GOAWAY), written before the streams' frames.
	ctl []byte
	// ready are the streams with output to write.
	ready []*stream
	// connBlocked are streams that stopped for the connection's send
	// window; a WINDOW_UPDATE on stream 0 wakes them.
	connBlocked []*stream
	sendWindow  int64
	// recvWindow is what the client may still send on the connection.
	recvWindow int64
	// peerWindow is the client's SETTINGS_INITIAL_WINDOW_SIZE, each new
	// stream's send window.
	peerWindow int64
	// tableSize is a SETTINGS_HEADER_TABLE_SIZE the writer has yet to
	// apply to its encoder (0: none).
	tableSize    uint32
	tableSizeSet bool
	// goAwaySent is set once GOAWAY is queued; draining, when it was a
	// graceful one: the connection closes once no stream is open.
	goAwaySent bool
	draining   bool
	lastID     uint32 // the last stream id a GOAWAY promised to serve
	// closeAfterWrite closes the connection once ctl is written (after a
	// connection error).
	closeAfterWrite bool
	closed          bool
	idleTimer       *time.Timer
	// doneDue are Sources of streams closed under mu, whose Done the
	// writer (or closeConn) calls without it.
	doneDue []Source
}

func newServerConn(s *Server, hs *http.Server, c net.Conn, h http.Handler, ctx context.Context, state *tls.ConnectionState) *serverConn {
	sc := &serverConn{
		srv:        s,
		hs:         hs,
		conn:       c,
		handler:    h,
		baseCtx:    ctx,
		tlsState:   state,
		remote:     c.RemoteAddr().String(),
		maxStreams: s.maxStreams(),
		recvWindow: initialWindow,
		wake:       make(chan struct{}, 1),
		writerDone: make(chan struct{}),
		streams:    make(map[uint32]*stream),
		sendWindow: initialWindow,
		peerWindow: initialWindow,
	}
	sc.maxHeaderBytes = DefaultMaxHeaderBytes
	if hs.MaxHeaderBytes > 0 {
		sc.maxHeaderBytes = uint32(hs.MaxHeaderBytes)
	}
	sc.writeTimeout = DefaultWriteTimeout
	if s.WriteTimeout > 0 {
		sc.writeTimeout = s.WriteTimeout
	}
	sc.idleTimeout = DefaultIdleTimeout
	if hs.IdleTimeout > 0 {
		sc.idleTimeout = hs.IdleTimeout
	}
	return sc
}

// run reads and handles frames until the connection ends.
func (sc *serverConn) run(sawPreface bool) {
	c := sc.conn
	c.SetWriteDeadline(time.Time{})
	c.SetReadDeadline(time.Now().Add(prefaceTimeout))
	br := bufio.NewReaderSize(c, 4096)
	if !sawPreface {
		var buf [len(clientPreface)]byte
		if _, err := io.ReadFull(br, buf[:]); err != nil || string(buf[:]) != clientPreface {
			c.Close()
			return
		}
	}
	sc.fr = http2.NewFramer(nil, br)
	sc.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	sc.fr.MaxHeaderListSize = sc.maxHeaderBytes
	sc.fr.SetMaxReadFrameSize(maxFrameSize)
	sc.fr.SetReuseFrames()

	// Our SETTINGS, then the connection window, before anything queued
	// already (a GOAWAY, when the connection came in during Shutdown):
	// the server's preface is its SETTINGS.
	sc.mu.Lock()
	queued := sc.ctl
	sc.ctl = appendSettings(nil, [][2]uint32{
		{uint32(http2.SettingMaxConcurrentStreams), sc.maxStreams},
		{uint32(http2.SettingInitialWindowSize), DefaultStreamWindow},
		{uint32(http2.SettingMaxHeaderListSize), sc.maxHeaderBytes},
		{uint32(http2.SettingEnablePush), 0},
	})
	sc.ctl = appendWindowUpdate(sc.ctl, 0, DefaultConnWindow-initialWindow)
	sc.ctl = append(sc.ctl, queued...)
	sc.recvWindow = DefaultConnWindow
	sc.idleTimer = time.AfterFunc(sc.idleTimeout, sc.idle)
	sc.mu.Unlock()
	go sc.writeLoop()
	sc.signal()

	err := sc.readLoop()
	sc.fail(err)
	// Give a GOAWAY the chance to be written before net/http closes the
	// socket.
	t := time.NewTimer(goAwayFlushTimeout)
	select {
	case <-sc.writerDone:
	case <-t.C:
	}
	t.Stop()
	sc.closeConn()
}

// readLoop handles frames until a connection error or the socket ends.
func (sc *serverConn) readLoop() error {
	for {
		fh, err := sc.fr.ReadFrameHeader()
		if err != nil {
			return err
		}
		f, err := sc.fr.ReadFrameForHeader(fh)
		if err != nil {
			var se http2.StreamError
			if errors.As(err, &se) {
				switch {
				case fh.Type == http2.FrameHeaders:
					// A malformed request still used its id.
					if id := fh.StreamID; id > sc.maxClientID && id%2 == 1 {
						sc.mu.Lock()
						sc.maxClientID = id
						sc.mu.Unlock()
					}
				case se.StreamID > sc.maxClientID:
					// Any other frame on a stream the client never opened
					// is a connection error, whatever else is wrong with it
					// (RFC 9113 5.1).
					return connError(http2.ErrCodeProtocol, "%s on idle stream %d", fh.Type, se.StreamID)
				}
				sc.resetStream(se.StreamID, se.Code)
				continue
			}
			return err
		}
		if !sc.sawSettings {
			// The preface ends with the client's SETTINGS.
			if _, ok := f.(*http2.SettingsFrame); !ok {
				return connError(http2.ErrCodeProtocol, "the client's first frame is %s, not SETTINGS", f.Header().Type)
			}
			sc.sawSettings = true
			sc.conn.SetReadDeadline(time.Time{})
		}
		if err := sc.handleFrame(f); err != nil {
			return err
		}
	}
}

// connErr is a connection error with the reason sent in GOAWAY.
type connErr struct {
	code   http2.ErrCode
	reason string
}

func (e connErr) Error() string { return fmt.Sprintf("connection error %s: %s", e.code, e.reason) }

func connError(code http2.ErrCode, format string, args ...any) error {
	return connErr{code: code, reason: fmt.Sprintf(format, args...)}
}

func (sc *serverConn) handleFrame(f http2.Frame) error {
	switch f := f.(type) {
	case *http2.SettingsFrame:
		return sc.onSettings(f)
	case *http2.MetaHeadersFrame:
		return sc.onHeaders(f)
	case *http2.DataFrame:
		return sc.onData(f)
	case *http2.WindowUpdateFrame:
		return sc.onWindowUpdate(f)
	case *http2.PingFrame:
		if f.IsAck() {
			return nil
		}
		sc.mu.Lock()
		sc.ctl = appendPing(sc.ctl, f.Data, true)
		sc.mu.Unlock()
		sc.signal()
		return nil
	case *http2.RSTStreamFrame:
		if f.StreamID > sc.maxClientID {
			return connError(http2.ErrCodeProtocol, "RST_STREAM on idle stream %d", f.StreamID)
		}
		sc.mu.Lock()
		if s := sc.streams[f.StreamID]; s != nil {
			sc.closeStreamLocked(s, errClientReset)
		}
		sc.mu.Unlock()
		return nil
	case *http2.GoAwayFrame:
		// The client will open no more streams; those open go on.
		return nil
	case *http2.PriorityFrame:
		return nil
	case *http2.PushPromiseFrame:
		return connError(http2.ErrCodeProtocol, "a client may not send PUSH_PROMISE")
	default:
		// Unknown frame types are ignored (RFC 9113 5.5).
		return nil
	}
}

func (sc *serverConn) onSettings(f *http2.SettingsFrame) error {
	if f.IsAck() {
		return nil
	}
	if f.StreamID != 0 {
		return connError(http2.ErrCodeProtocol, "SETTINGS on stream %d", f.StreamID)
	}
	var err error
	sc.mu.Lock()
	defer sc.mu.Unlock()
	f.ForeachSetting(func(st http2.Setting) error {
		if err = st.Valid(); err != nil {
			return err
		}
		switch st.ID {
		case http2.SettingInitialWindowSize:
			delta := int64(st.Val) - sc.peerWindow
			sc.peerWindow = int64(st.Val)
			for _, s := range sc.streams {
				s.sendWindow += delta
				if s.sendWindow > maxWindow {
					err = connError(http2.ErrCodeFlowControl, "SETTINGS_INITIAL_WINDOW_SIZE overflows stream %d's window", s.id)
					return err
				}
				if delta > 0 && s.hasOutputLocked() {
					sc.queueLocked(s)
				}
			}
		case http2.SettingHeaderTableSize:
			sc.tableSize, sc.tableSizeSet = st.Val, true
		}
		return nil
	})
	if err != nil {
		var ce http2.ConnectionError
		if errors.As(err, &ce) {
			return connError(http2.ErrCode(ce), "bad SETTINGS value")
		}
		return err
	}
	sc.ctl = appendSettingsAck(sc.ctl)
	sc.signal()
	return nil
}

func (sc *serverConn) onWindowUpdate(f *http2.WindowUpdateFrame) error {
	inc := int64(f.Increment)
	sc.mu.Lock()
	defer sc.mu.Unlock()
	if f.StreamID == 0 {
		if inc == 0 {
			return connError(http2.ErrCodeProtocol, "WINDOW_UPDATE of 0 on the connection")
		}
		sc.sendWindow += inc
		if sc.sendWindow > maxWindow {
			return connError(http2.ErrCodeFlowControl, "WINDOW_UPDATE overflows the connection's window")
		}
		for _, s := range sc.connBlocked {
			s.connBlocked = false
			if !s.closed {
				sc.queueLocked(s)
			}
		}
		clear(sc.connBlocked)
		sc.connBlocked = sc.connBlocked[:0]
		return nil
	}
	if f.StreamID > sc.maxClientID {
		return connError(http2.ErrCodeProtocol, "WINDOW_UPDATE on idle stream %d", f.StreamID)
	}
	s := sc.streams[f.StreamID]
	if s == nil {
		return nil // a closed stream: updates may still be in flight
	}
	if inc == 0 {
		sc.resetStreamLocked(s, http2.ErrCodeProtocol)
		return nil
	}
	s.sendWindow += inc
	if s.sendWindow > maxWindow {
		sc.resetStreamLocked(s, http2.ErrCodeFlowControl)
		return nil
	}
	if s.hasOutputLocked() {
		sc.queueLocked(s)
	}
	return nil
}

func (sc *serverConn) onData(f *http2.DataFrame) error {
	id := f.StreamID
	n := int64(f.Length)
	if id > sc.maxClientID {
		return connError(http2.ErrCodeProtocol, "DATA on idle stream %d", id)
	}
	// recvWindow is given back by handlers' reads (creditConnLocked), so
	// it is taken under mu: a lost update would end the connection of a
	// client that kept to its window.
	sc.mu.Lock()
	if n > sc.recvWindow {
		sc.mu.Unlock()
		return connError(http2.ErrCodeFlowControl, "DATA beyond the connection's flow-control window")
	}
	sc.recvWindow -= n
	s := sc.streams[id]
	if s == nil || s.remoteClosed {
		// Closed, or the client had ended its side: give the connection
		// window back, and tell a client that keeps sending on a stream it
		// ended that it is closed.
		if n > 0 {
			sc.creditConnLocked(n)
		}
		if s != nil {
			sc.resetStreamLocked(s, http2.ErrCodeStreamClosed)
		}
		sc.mu.Unlock()
		return nil
	}
	if n > s.recvWindow {
		sc.creditConnLocked(n)
		sc.resetStreamLocked(s, http2.ErrCodeFlowControl)
		sc.mu.Unlock()
		return nil
	}
	s.recvWindow -= n
	data := f.Data()
	if pad := n - int64(len(data)); pad > 0 {
		// Padding counts against the windows but is never read: give it
		// back at once.
		sc.creditLocked(s, pad)
	}
	s.received += int64(len(data))
	if s.declaredLen >= 0 && (s.received > s.declaredLen || f.StreamEnded() && s.received != s.declaredLen) {
		sc.creditConnLocked(int64(len(data)))
		sc.resetStreamLocked(s, http2.ErrCodeProtocol)
		sc.mu.Unlock()
		return nil
	}
	body := s.body
	if f.StreamEnded() {
		s.remoteClosed = true
	}
	sc.mu.Unlock()
	if body == nil || !body.write(data, f.StreamEnded()) {
		// No one will read it: give the windows back.
		sc.mu.Lock()
		if len(data) > 0 {
			sc.creditLocked(s, int64(len(data)))
		}
		sc.mu.Unlock()
	}
	if f.StreamEnded() {
		sc.mu.Lock()
		sc.maybeCloseLocked(s)
		sc.mu.Unlock()
	}
	return nil
}

// creditLocked gives n bytes of receive window back to the client, on the
// connection and on s (unless s's client side has ended).
func (sc *serverConn) creditLocked(s *stream, n int64) {
	sc.creditConnLocked(n)
	if !s.remoteClosed && !s.closed {
		s.recvWindow += n
		sc.ctl = appendWindowUpdate(sc.ctl, s.id, uint32(n))
	}
	sc.signal()
}

// creditConnLocked gives n bytes of the connection's receive window back.
func (sc *serverConn) creditConnLocked(n int64) {
	sc.recvWindow += n
	sc.ctl = appendWindowUpdate(sc.ctl, 0, uint32(n))
	sc.signal()
}

// resetStream answers a stream error found by the Framer.
func (sc *serverConn) resetStream(id uint32, code http2.ErrCode) {
	sc.mu.Lock()
	if s := sc.streams[id]; s != nil {
		sc.closeStreamLocked(s, streamErr(code))
	}
	sc.ctl = appendRSTStream(sc.ctl, id, code)
	sc.signal()
	sc.mu.Unlock()
}

// resetStreamLocked sends RST_STREAM for s and closes it.
func (sc *serverConn) resetStreamLocked(s *stream, code http2.ErrCode) {
	sc.closeStreamLocked(s, streamErr(code))
	sc.ctl = appendRSTStream(sc.ctl, s.id, code)
	sc.signal()
}

var errClientReset = errors.New("h2server: stream reset by the client")

type streamErr http2.ErrCode

func (e streamErr) Error() string {
	return "h2server: stream reset: " + http2.ErrCode(e).String()
}

// signal wakes the writer.
func (sc *serverConn) signal() {
	select {
	case sc.wake <- struct{}{}:
	default:
	}
}

// queueLocked puts s in the writer's ready list.
func (sc *serverConn) queueLocked(s *stream) {
	if s.queued {
		return
	}
	s.queued = true
	sc.ready = append(sc.ready, s)
	sc.signal()
}

// idle closes the connection if it has had no open stream for the idle
// timeout.
func (sc *serverConn) idle() {
	sc.mu.Lock()
	if len(sc.streams) > 0 || sc.closed {
		sc.mu.Unlock()
		return
	}
	sc.goAwayLocked(http2.ErrCodeNo, "idle")
	sc.closeAfterWrite = true
	sc.signal()
	sc.mu.Unlock()
}

// startDrain sends GOAWAY: the connection takes no new streams and closes
// once those open have ended.
func (sc *serverConn) startDrain() {
	sc.mu.Lock()
	if !sc.goAwaySent {
		sc.goAwayLocked(http2.ErrCodeNo, "shutting down")
	}
	sc.draining = true
	if len(sc.streams) == 0 {
		sc.closeAfterWrite = true
	}
	sc.signal()
	sc.mu.Unlock()
}

// goAwayLocked queues GOAWAY with the last stream id opened so far.
func (sc *serverConn) goAwayLocked(code http2.ErrCode, reason string) {
	if sc.goAwaySent {
		return
	}
	sc.goAwaySent = true
	sc.lastID = sc.maxClientID
	sc.ctl = appendGoAway(sc.ctl, sc.lastID, code, reason)
}

// fail ends the connection after the reader stopped with err: a connection
// error gets GOAWAY with its code first.
func (sc *serverConn) fail(err error) {
	var ce connErr
	var fce http2.ConnectionError
	code, reason := http2.ErrCodeNo, ""
	switch {
	case errors.As(err, &ce):
		code, reason = ce.code, ce.reason
	case errors.As(err, &fce):
		code = http2.ErrCode(fce)
		if d := sc.fr.ErrorDetail(); d != nil {
			reason = d.Error()
		}
	case errors.Is(err, http2.ErrFrameTooLarge):
		code, reason = http2.ErrCodeFrameSize, "frame larger than SETTINGS_MAX_FRAME_SIZE"
	default:
		// The socket ended or failed: nothing more can be said.
		sc.closeConn()
		return
	}
	sc.mu.Lock()
	sc.goAwaySent = false // a connection error's GOAWAY follows any graceful one
	sc.goAwayLocked(code, reason)
	sc.closeAfterWrite = true
	sc.signal()
	sc.mu.Unlock()
}

// closeConn closes the socket and every stream, once. Called by the
// reader (not the writer), it waits for the writer to stop before it calls
// the Sources' Done: the writer may be in a Source's Fill, and a Source is
// never called by two goroutines at once. Closing the socket first ends a
// write the writer is blocked in.
func (sc *serverConn) closeConn() { sc.close(false) }

func (sc *serverConn) close(fromWriter bool) {
	sc.mu.Lock()
	if sc.closed {
		sc.mu.Unlock()
		return
	}
	sc.closed = true
	if sc.idleTimer != nil {
		sc.idleTimer.Stop()
	}
	for _, s := range sc.streams {
		sc.closeStreamLocked(s, net.ErrClosed)
	}
	done := sc.doneDue
	sc.doneDue = nil
	sc.signal()
	sc.mu.Unlock()
	sc.conn.Close()
	if !fromWriter {
		<-sc.writerDone
	}
	for _, d := range done {
		d.Done()
	}
}

// appendFrameHeader appends the 9-byte header of a frame.
func appendFrameHeader(b []byte, length int, typ http2.FrameType, flags http2.Flags, id uint32) []byte {
	return append(b, byte(length>>16), byte(length>>8), byte(length), byte(typ), byte(flags),
		byte(id>>24)&0x7f, byte(id>>16), byte(id>>8), byte(id))
}

func appendUint32(b []byte, v uint32) []byte {
	return append(b, byte(v>>24), byte(v>>16), byte(v>>8), byte(v))
}

func appendSettings(b []byte, settings [][2]uint32) []byte {
	b = appendFrameHeader(b, 6*len(settings), http2.FrameSettings, 0, 0)
	for _, st := range settings {
		b = append(b, byte(st[0]>>8), byte(st[0]))
		b = appendUint32(b, st[1])
	}
	return b
}

func appendSettingsAck(b []byte) []byte {
	return appendFrameHeader(b, 0, http2.FrameSettings, http2.FlagSettingsAck, 0)
}

func appendWindowUpdate(b []byte, id, inc uint32) []byte {
	b = appendFrameHeader(b, 4, http2.FrameWindowUpdate, 0, id)
	return appendUint32(b, inc&0x7fffffff)
}

func appendPing(b []byte, data [8]byte, ack bool) []byte {
	var flags http2.Flags
	if ack {
		flags = http2.FlagPingAck
	}
	b = appendFrameHeader(b, 8, http2.FramePing, flags, 0)
	return append(b, data[:]...)
}

func appendRSTStream(b []byte, id uint32, code http2.ErrCode) []byte {
	b = appendFrameHeader(b, 4, http2.FrameRSTStream, 0, id)
	return appendUint32(b, uint32(code))
}

func appendGoAway(b []byte, lastID uint32, code http2.ErrCode, reason string) []byte {
	if len(reason) > 256 {
		reason = reason[:256]
	}
	b = appendFrameHeader(b, 8+len(reason), http2.FrameGoAway, 0, 0)
	b = appendUint32(b, lastID&0x7fffffff)
	b = appendUint32(b, uint32(code))
	return append(b, reason...)
}

// appendData appends p as DATA frames of s of at most maxFrameSize.
func appendData(b []byte, id uint32, p []byte, end bool) []byte {
	for {
		n := min(len(p), maxFrameSize)
		var flags http2.Flags
		if end && n == len(p) {
			flags = http2.FlagDataEndStream
		}
		b = appendFrameHeader(b, n, http2.FrameData, flags, id)
		b = append(b, p[:n]...)
		p = p[n:]
		if len(p) == 0 {
			return b
		}
	}
}

// appendHeaders appends block as a HEADERS frame and, past maxFrameSize,
// CONTINUATION frames.
func appendHeaders(b []byte, id uint32, block []byte, end bool) []byte {
	typ := http2.FrameHeaders
	for {
		n := min(len(block), maxFrameSize)
		var flags http2.Flags
		if end && typ == http2.FrameHeaders {
			flags |= http2.FlagHeadersEndStream
		}
		if n == len(block) {
			flags |= http2.FlagHeadersEndHeaders
		}
		b = appendFrameHeader(b, n, typ, flags, id)
		b = append(b, block[:n]...)
		block = block[n:]
		typ = http2.FrameContinuation
		if len(block) == 0 {
			return b
		}
	}
}
