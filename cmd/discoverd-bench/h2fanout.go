package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/discoverd/discoverd/api"
)

// fanout-sse-h2 reads its streams with a raw HTTP/2 client: one goroutine
// per connection reads the frames of all its streams and parses their
// events, instead of net/http's transport, which keeps a goroutine and a
// body pipe per stream. At 100,000 streams on a machine shared with the
// server, the transport's per-stream machinery cost the harness seconds of
// CPU per fan-out and made it the slower side of the measurement.

const (
	// h2StreamWindow is the flow-control window given to each stream, and
	// h2ConnWindow the connection's: large, and given back once half is
	// used, so that the server never waits for window to write an event.
	h2StreamWindow = 1 << 20
	h2ConnWindow   = 16 << 20
	// h2DefaultMaxStreams is how many streams a connection carries when
	// the server sets no SETTINGS_MAX_CONCURRENT_STREAMS (no limit).
	h2DefaultMaxStreams = 1000
	// h2OpenWindow is how many streams may wait at once for their response
	// and current state while opening.
	h2OpenWindow = 512
	// h2Openers is how many source addresses open their connections at
	// once.
	h2Openers = 8
	// h2OpenTimeout ends the opening when no stream got ready for this
	// long.
	h2OpenTimeout = 30 * time.Second
)

// h2Fanout opens the HTTP/2 streams of one fanout and reads them.
type h2Fanout struct {
	b      *bench
	ctx    context.Context
	wg     *sync.WaitGroup
	path   string // of the leader stream, without a server's prefix
	events chan<- arrival
	errc   chan<- error
	// ready gets one value per stream: nil once it read its current
	// state, or the error that ended it before; and the error of an
	// opener that could not go on.
	ready chan error
	// sem holds a slot for each stream that is opening.
	sem    chan struct{}
	opened atomic.Int64
	nconns atomic.Int64

	mu     sync.Mutex
	conns  []*h2Conn
	closed bool
}

// h2Conn is one HTTP/2 connection and its streams. Writes go through wmu
// (the opener writes HEADERS, the reader control frames); streams and
// the flow-control counts belong to the reader goroutine.
type h2Conn struct {
	nc net.Conn
	fr *http2.Framer

	wmu  sync.Mutex
	bw   *bufio.Writer
	enc  *hpack.Encoder
	hbuf bytes.Buffer
	// dead is set once the reader gave up on the connection or the server
	// sent GOAWAY: no more streams are opened on it, and sent is final.
	dead bool
	// sent is the highest stream ID whose HEADERS were written.
	sent atomic.Uint32

	streams     []h2Stream // stream ID 2i+1 is streams[i]
	live        int        // streams not yet ended
	connUnacked uint32     // DATA bytes not yet given back to the connection window
}

// h2Stream is one SSE stream as the reader sees it.
type h2Stream struct {
	sub     int // the subscriber's number
	state   uint8
	status  int
	unacked uint32 // DATA bytes not yet given back to the stream's window
	body    []byte // a failed response's body, for its error
	sse     sseParser
}

const (
	h2Opening uint8 = iota // waiting for the response and the current state
	h2Open                 // delivering leader events
	h2Done                 // ended (and reported)
)

// openH2Streams opens k SSE streams of svc's leader over HTTP/2, spread
// over source addresses as the HTTP/1.1 streams are, each address's streams
// multiplexed over as few connections as the server's
// SETTINGS_MAX_CONCURRENT_STREAMS allows. Each connection has one reader
// goroutine (added to wg); ctx's end closes the connections. It returns once
// every stream read its current state, with the note for the row.
func (b *bench) openH2Streams(ctx context.Context, wg *sync.WaitGroup, svc string, k int, events chan<- arrival, errc chan<- error) (string, error) {
	f := &h2Fanout{
		b: b, ctx: ctx, wg: wg, path: "/services/" + svc + "/leader",
		events: events, errc: errc,
		// A value per stream, and one per opener that gives up.
		ready: make(chan error, k+h2Openers),
		sem:   make(chan struct{}, h2OpenWindow),
	}
	if len(b.servers) > 1 {
		// As openSSEWith: a server other than the first may not hold the
		// service yet; a consistent read waits until it does.
		f.path += "?consistent=true"
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		<-ctx.Done()
		f.closeAll()
	}()
	b.progress.set("opening streams", &f.opened, int64(k), 0)

	perAddr, spread := k, b.spreadSources()
	if spread {
		perAddr = b.cfg.streamsPerAddr
	}
	naddrs := (k + perAddr - 1) / perAddr
	addrs := make(chan int, naddrs)
	for j := 0; j < naddrs; j++ {
		addrs <- j
	}
	close(addrs)
	for w := 0; w < min(h2Openers, naddrs); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range addrs {
				var local *net.TCPAddr
				if spread {
					la, err := sourceAddr(j)
					if err != nil {
						f.ready <- err
						return
					}
					local = la
				}
				if err := f.openAddr(local, j*perAddr, min(k, (j+1)*perAddr)); err != nil {
					if ctx.Err() == nil {
						f.ready <- err
					}
					return
				}
			}
		}()
	}

	timer := time.NewTimer(h2OpenTimeout)
	defer timer.Stop()
	for i := 0; i < k; i++ {
		select {
		case err := <-f.ready:
			if err != nil {
				if note := fileLimitNote(err, f.opened.Load()); note != "" {
					return "", fmt.Errorf("%s: %v", note, err)
				}
				return "", err
			}
			timer.Reset(h2OpenTimeout)
		case <-timer.C:
			return "", fmt.Errorf("%d of %d streams opened, and no more within %s", f.opened.Load(), k, h2OpenTimeout)
		case <-ctx.Done():
			return "", ctx.Err()
		}
	}
	proto := "h2c"
	if b.servers[0].tls {
		proto = "h2 over TLS"
	}
	return fmt.Sprintf("%s, raw frames, %d connections from %d source address(es)", proto, f.nconns.Load(), naddrs), nil
}

// openAddr opens the streams of subscribers [from, to) from source address
// local (nil: any), each on server i%len(servers), as openSSEWith does.
func (f *h2Fanout) openAddr(local *net.TCPAddr, from, to int) error {
	n := len(f.b.servers)
	for s := 0; s < n; s++ {
		var subs []int
		for i := from; i < to; i++ {
			if i%n == s {
				subs = append(subs, i)
			}
		}
		for len(subs) > 0 {
			if f.ctx.Err() != nil {
				return f.ctx.Err()
			}
			c, max, err := f.dial(local, f.b.servers[s])
			if err != nil {
				return err
			}
			m := min(len(subs), max)
			c.streams = make([]h2Stream, m)
			for i := range c.streams {
				c.streams[i].sub = subs[i]
			}
			c.live = m
			subs = subs[m:]
			if !f.add(c) {
				return f.ctx.Err()
			}
			f.wg.Add(1)
			go f.read(c)
			if err := f.openStreams(c, f.b.servers[s]); err != nil {
				return err
			}
		}
	}
	return nil
}

// dial connects to srv from local and exchanges SETTINGS: the answer's
// max is how many streams the connection may carry.
func (f *h2Fanout) dial(local *net.TCPAddr, srv server) (*h2Conn, int, error) {
	d := &net.Dialer{Timeout: 10 * time.Second}
	if local != nil {
		d.LocalAddr = local
	}
	nc, err := d.DialContext(f.ctx, "tcp", srv.host)
	if err != nil {
		return nil, 0, err
	}
	nc.SetDeadline(time.Now().Add(10 * time.Second))
	if srv.tls {
		cfg := &tls.Config{MinVersion: tls.VersionTLS12}
		if f.b.tlsConf != nil {
			cfg = f.b.tlsConf.Clone()
		}
		cfg.NextProtos = []string{"h2"}
		if cfg.ServerName == "" {
			cfg.ServerName, _, _ = net.SplitHostPort(srv.host)
		}
		tc := tls.Client(nc, cfg)
		if err := tc.HandshakeContext(f.ctx); err != nil {
			nc.Close()
			return nil, 0, err
		}
		if p := tc.ConnectionState().NegotiatedProtocol; p != "h2" {
			nc.Close()
			return nil, 0, fmt.Errorf("%s: the server did not agree to HTTP/2 (ALPN %q)", srv.host, p)
		}
		nc = tc
	}
	c := &h2Conn{nc: nc, bw: bufio.NewWriterSize(nc, 8<<10)}
	c.fr = http2.NewFramer(c.bw, bufio.NewReaderSize(nc, 32<<10))
	c.fr.SetReuseFrames()
	c.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	c.enc = hpack.NewEncoder(&c.hbuf)
	fail := func(err error) (*h2Conn, int, error) {
		nc.Close()
		return nil, 0, fmt.Errorf("%s: HTTP/2 handshake: %w", srv.host, err)
	}
	c.bw.WriteString(http2.ClientPreface)
	c.fr.WriteSettings(
		http2.Setting{ID: http2.SettingEnablePush, Val: 0},
		http2.Setting{ID: http2.SettingInitialWindowSize, Val: h2StreamWindow},
	)
	c.fr.WriteWindowUpdate(0, h2ConnWindow-65535)
	if err := c.bw.Flush(); err != nil {
		return fail(err)
	}
	// The server's connection preface is a SETTINGS frame.
	fr, err := c.fr.ReadFrame()
	if err != nil {
		return fail(err)
	}
	sf, ok := fr.(*http2.SettingsFrame)
	if !ok || sf.IsAck() {
		return fail(fmt.Errorf("the server's first frame is %v, want SETTINGS", fr.Header()))
	}
	max := h2DefaultMaxStreams
	c.applySettings(sf, &max)
	if max == 0 {
		return fail(errors.New("the server allows no concurrent streams"))
	}
	if err := c.fr.WriteSettingsAck(); err != nil {
		return fail(err)
	}
	nc.SetDeadline(time.Time{})
	f.nconns.Add(1)
	return c, max, nil
}

// applySettings takes the server's settings that matter to this client:
// its limit of concurrent streams (into max, when given) and the size of
// the header table our encoder may use. The caller holds wmu or is the
// only user of c.
func (c *h2Conn) applySettings(sf *http2.SettingsFrame, max *int) {
	sf.ForeachSetting(func(s http2.Setting) error {
		switch s.ID {
		case http2.SettingMaxConcurrentStreams:
			if max != nil {
				*max = int(min(s.Val, 1<<20))
			}
		case http2.SettingHeaderTableSize:
			c.enc.SetMaxDynamicTableSizeLimit(s.Val)
		}
		return nil
	})
}

// add records c to be closed at the end; false when that already came.
func (f *h2Fanout) add(c *h2Conn) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		c.nc.Close()
		return false
	}
	f.conns = append(f.conns, c)
	return true
}

// closeAll ends every connection: GOAWAY, then close.
func (f *h2Fanout) closeAll() {
	f.mu.Lock()
	f.closed = true
	conns := f.conns
	f.mu.Unlock()
	for _, c := range conns {
		// A write the server does not take must not hold the end up.
		c.nc.SetWriteDeadline(time.Now().Add(time.Second))
		c.wmu.Lock()
		c.fr.WriteGoAway(0, http2.ErrCodeNo, nil)
		c.bw.Flush()
		c.wmu.Unlock()
		c.nc.Close()
	}
}

// openStreams writes the HEADERS of each of c's streams, taking a slot
// of the opening window for each; the writes are flushed when the window
// is full and at the end, so that many go out in one socket write.
func (f *h2Fanout) openStreams(c *h2Conn, srv server) error {
	authority, prefix := splitBase(srv.base)
	path := prefix + f.path
	scheme := "http"
	if srv.tls {
		scheme = "https"
	}
	for i := range c.streams {
		select {
		case f.sem <- struct{}{}:
		default:
			if err := c.flush(); err != nil {
				return nil // the reader reports the connection's failure
			}
			select {
			case f.sem <- struct{}{}:
			case <-f.ctx.Done():
				return f.ctx.Err()
			}
		}
		id := uint32(2*i + 1)
		c.wmu.Lock()
		if c.dead {
			c.wmu.Unlock()
			<-f.sem
			return nil
		}
		c.hbuf.Reset()
		for _, hf := range [...]hpack.HeaderField{
			{Name: ":method", Value: "GET"},
			{Name: ":scheme", Value: scheme},
			{Name: ":authority", Value: authority},
			{Name: ":path", Value: path},
			{Name: "accept", Value: "text/event-stream"},
		} {
			c.enc.WriteField(hf)
		}
		if f.b.token != "" {
			c.enc.WriteField(hpack.HeaderField{Name: "authorization", Value: "Bearer " + f.b.token, Sensitive: true})
		}
		err := c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: c.hbuf.Bytes(), EndStream: true, EndHeaders: true})
		c.sent.Store(id)
		c.wmu.Unlock()
		if err != nil {
			return nil // the reader reports the connection's failure
		}
	}
	c.flush()
	return nil
}

// splitBase splits a server's base URL into its host (the :authority) and
// its path prefix.
func splitBase(base string) (authority, prefix string) {
	rest := base
	if i := strings.Index(rest, "://"); i >= 0 {
		rest = rest[i+3:]
	}
	if i := strings.IndexByte(rest, '/'); i >= 0 {
		return rest[:i], rest[i:]
	}
	return rest, ""
}

func (c *h2Conn) flush() error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.bw.Flush()
}

// write writes control frames with fn and flushes them.
func (c *h2Conn) write(fn func(fr *http2.Framer) error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if fn(c.fr) == nil {
		c.bw.Flush()
	}
}

// stream is the stream with ID id, nil when no such stream was opened.
func (c *h2Conn) stream(id uint32) *h2Stream {
	if id%2 == 0 || id > c.sent.Load() {
		return nil
	}
	return &c.streams[(id-1)/2]
}

// read is c's reader goroutine: it reads the frames of all c's streams
// until they have all ended or the connection fails.
func (f *h2Fanout) read(c *h2Conn) {
	defer f.wg.Done()
	defer c.nc.Close()
	for c.live > 0 {
		fr, err := c.fr.ReadFrame()
		if err != nil {
			var se http2.StreamError
			if errors.As(err, &se) {
				if st := c.stream(se.StreamID); st != nil {
					f.fail(c, st, se.StreamID, err)
				}
				continue
			}
			f.failConn(c, err)
			return
		}
		switch fr := fr.(type) {
		case *http2.DataFrame:
			f.data(c, fr, time.Now())
		case *http2.MetaHeadersFrame:
			f.headers(c, fr)
		case *http2.RSTStreamFrame:
			if st := c.stream(fr.StreamID); st != nil {
				f.fail(c, st, fr.StreamID, fmt.Errorf("reset by the server (%v)", fr.ErrCode))
			}
		case *http2.SettingsFrame:
			if !fr.IsAck() {
				c.write(func(w *http2.Framer) error {
					c.applySettings(fr, nil)
					return w.WriteSettingsAck()
				})
			}
		case *http2.PingFrame:
			if !fr.IsAck() {
				c.write(func(w *http2.Framer) error { return w.WritePing(true, fr.Data) })
			}
		case *http2.GoAwayFrame:
			// No new streams on this connection. Streams past its last
			// stream ID were not served; with an error code, none will be
			// served further.
			c.wmu.Lock()
			c.dead = true
			c.wmu.Unlock()
			err := fmt.Errorf("the server sent GOAWAY (%v, %q)", fr.ErrCode, fr.DebugData())
			for i := range c.streams {
				if id := uint32(2*i + 1); id > fr.LastStreamID || fr.ErrCode != http2.ErrCodeNo {
					f.fail(c, &c.streams[i], id, err)
				}
			}
		}
	}
}

// headers takes a stream's response headers.
func (f *h2Fanout) headers(c *h2Conn, fr *http2.MetaHeadersFrame) {
	id := fr.StreamID
	st := c.stream(id)
	if st == nil || st.state == h2Done {
		return
	}
	if st.status != 0 {
		// Trailers end the stream.
		f.fail(c, st, id, errors.New("the server ended the stream"))
		return
	}
	status, err := strconv.Atoi(fr.PseudoValue("status"))
	switch {
	case err != nil:
		f.fail(c, st, id, fmt.Errorf("malformed :status %q", fr.PseudoValue("status")))
		return
	case status/100 == 1:
		return // informational: the response follows
	}
	st.status = status
	if status != 200 {
		if fr.StreamEnded() {
			f.fail(c, st, id, fmt.Errorf("GET %s: %w", f.path, httpError(status, nil)))
		}
		return // the body, for the error, follows
	}
	var ct string
	for _, hf := range fr.RegularFields() {
		if hf.Name == "content-type" {
			ct = hf.Value
		}
	}
	if !strings.HasPrefix(ct, "text/event-stream") {
		f.fail(c, st, id, fmt.Errorf("GET %s: Content-Type %q, want text/event-stream", f.path, ct))
		return
	}
	if fr.StreamEnded() {
		f.fail(c, st, id, errors.New("the server ended the stream"))
	}
}

// data takes a DATA frame read at at: gives its bytes back to the flow
// control windows and parses the stream's events.
func (f *h2Fanout) data(c *h2Conn, fr *http2.DataFrame, at time.Time) {
	id := fr.StreamID
	n := fr.Header().Length // padding included: it counts against the windows
	var connIncr, streamIncr uint32
	if c.connUnacked += n; c.connUnacked >= h2ConnWindow/2 {
		connIncr, c.connUnacked = c.connUnacked, 0
	}
	st := c.stream(id)
	live := st != nil && st.state != h2Done && !fr.StreamEnded()
	if live {
		if st.unacked += n; st.unacked >= h2StreamWindow/2 {
			streamIncr, st.unacked = st.unacked, 0
		}
	}
	if connIncr > 0 || streamIncr > 0 {
		c.write(func(w *http2.Framer) error {
			if connIncr > 0 {
				if err := w.WriteWindowUpdate(0, connIncr); err != nil {
					return err
				}
			}
			if streamIncr > 0 {
				return w.WriteWindowUpdate(id, streamIncr)
			}
			return nil
		})
	}
	if st == nil || st.state == h2Done {
		return
	}
	if st.status != 200 {
		if len(st.body) < 4096 {
			st.body = append(st.body, fr.Data()[:min(len(fr.Data()), 4096-len(st.body))]...)
		}
		if fr.StreamEnded() {
			f.fail(c, st, id, fmt.Errorf("GET %s: %w", f.path, httpError(st.status, st.body)))
		}
		return
	}
	err := st.sse.feed(fr.Data(), func(ev sseEvent) error { return f.event(st, ev, at) })
	switch {
	case err != nil:
		f.fail(c, st, id, err)
	case fr.StreamEnded():
		f.fail(c, st, id, errors.New("the server ended the stream"))
	}
}

// event takes one event of st, read at at.
func (f *h2Fanout) event(st *h2Stream, ev sseEvent, at time.Time) error {
	if ev.isError {
		return sseErrorEvent(ev.data)
	}
	e, err := decodeShared(ev.data)
	if err != nil {
		return err
	}
	switch {
	case st.state == h2Opening:
		if e.Kind == api.EventCurrent {
			st.state = h2Open
			f.opened.Add(1)
			<-f.sem
			f.ready <- nil
		}
	case e.Kind == api.EventLeader && e.Instance != nil:
		if !deliver(f.ctx, f.events, arrival{sub: st.sub, kind: e.Kind, id: e.Instance.ID, at: at}) {
			return errStop
		}
	}
	return nil
}

// fail ends stream st (ID id) with err: an opening stream's error goes to
// ready, an open one's to errc unless the fanout is over.
func (f *h2Fanout) fail(c *h2Conn, st *h2Stream, id uint32, err error) {
	switch st.state {
	case h2Done:
		return
	case h2Opening:
		if id <= c.sent.Load() {
			<-f.sem
		}
		f.ready <- fmt.Errorf("stream %d: %w", st.sub, err)
	case h2Open:
		if f.ctx.Err() == nil {
			select {
			case f.errc <- fmt.Errorf("stream %d: %w", st.sub, err):
			default:
			}
		}
	}
	st.state = h2Done
	st.sse.pending, st.body = nil, nil
	c.live--
}

// failConn ends every stream of c with err.
func (f *h2Fanout) failConn(c *h2Conn, err error) {
	c.wmu.Lock()
	c.dead = true // no more HEADERS: sent is final
	c.wmu.Unlock()
	for i := range c.streams {
		f.fail(c, &c.streams[i], uint32(2*i+1), err)
	}
}

// sseParser splits the bytes of one event stream, as DATA frames bring
// them, into events. Between frames it keeps only the bytes of the event
// not yet complete: nil when a frame ends on an event's end, as the
// server's frames do.
type sseParser struct {
	pending []byte
}

// sseEvent is one parsed event. data is valid only during the call it is
// given to.
type sseEvent struct {
	isError bool
	data    []byte
}

// maxSSEEvent bounds an event, so that a stream without event ends cannot
// take the harness's memory.
const maxSSEEvent = 1 << 20

// feed parses p, the next bytes of the stream, and gives each complete
// event with data to emit. Lines end in LF or CRLF; lines starting with
// ':' are comments (keep-alives); an event's data lines are joined with
// LF.
func (p *sseParser) feed(b []byte, emit func(sseEvent) error) error {
	buf, inPending := b, len(p.pending) > 0
	if inPending {
		p.pending = append(p.pending, b...)
		buf = p.pending
	}
	start := 0 // where the event not yet complete starts
	var ev sseEvent
	lines := 0 // data lines of ev
	for i := 0; ; {
		nl := bytes.IndexByte(buf[i:], '\n')
		if nl < 0 {
			break
		}
		line := buf[i : i+nl]
		i += nl + 1
		if n := len(line); n > 0 && line[n-1] == '\r' {
			line = line[:n-1]
		}
		switch {
		case len(line) == 0:
			if len(ev.data) > 0 {
				if err := emit(ev); err != nil {
					p.pending = nil
					return err
				}
			}
			ev, lines, start = sseEvent{}, 0, i
		case line[0] == ':':
		case bytes.HasPrefix(line, []byte("data:")):
			v := line[5:]
			if len(v) > 0 && v[0] == ' ' {
				v = v[1:]
			}
			if lines++; lines == 1 {
				ev.data = v // no copy: the usual single line
			} else {
				ev.data = append(append(append([]byte(nil), ev.data...), '\n'), v...)
			}
		case bytes.HasPrefix(line, []byte("event:")):
			ev.isError = string(bytes.TrimSpace(line[6:])) == "error"
		}
	}
	rest := buf[start:]
	switch {
	case len(rest) == 0:
		p.pending = nil
	case len(rest) > maxSSEEvent:
		p.pending = nil
		return fmt.Errorf("an event longer than %d bytes", maxSSEEvent)
	case inPending:
		p.pending = append(p.pending[:0], rest...)
	default:
		p.pending = append([]byte(nil), rest...)
	}
	return nil
}
