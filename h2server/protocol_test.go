package h2server_test

import (
	"encoding/binary"
	"testing"

	"golang.org/x/net/http2"
)

// rawFrame encodes a frame by hand, for frames the Framer will not write.
func rawFrame(typ http2.FrameType, flags http2.Flags, id uint32, payload []byte) []byte {
	b := []byte{byte(len(payload) >> 16), byte(len(payload) >> 8), byte(len(payload)), byte(typ), byte(flags)}
	b = binary.BigEndian.AppendUint32(b, id)
	return append(b, payload...)
}

// TestProtocolErrors: each violation gets GOAWAY (a connection error) or
// RST_STREAM (a stream error) with its code, never a hang; after a stream
// error the connection keeps working, after a connection error it closes.
func TestProtocolErrors(t *testing.T) {
	window := make([]byte, 16384)
	cases := []struct {
		name string
		// noSettings leaves the client's SETTINGS out of the preface.
		noSettings bool
		send       func(rc *rawConn, h *blockingHandler)
		// goAway is the connection error's code; else stream is reset
		// with code.
		goAway       http2.ErrCode
		stream       uint32
		code         http2.ErrCode
		isConnection bool
	}{
		{name: "first frame not SETTINGS", noSettings: true, isConnection: true, goAway: http2.ErrCodeProtocol,
			send: func(rc *rawConn, _ *blockingHandler) { rc.check(rc.fr.WritePing(false, [8]byte{})) }},
		{name: "DATA on idle stream", isConnection: true, goAway: http2.ErrCodeProtocol,
			send: func(rc *rawConn, _ *blockingHandler) { rc.check(rc.fr.WriteData(1, true, []byte("x"))) }},
		{name: "even stream id", isConnection: true, goAway: http2.ErrCodeProtocol,
			send: func(rc *rawConn, _ *blockingHandler) { rc.request(2, "GET", "/", true) }},
		// A lower id may be of a stream that was opened and closed: the
		// server keeps no record of which, and answers STREAM_CLOSED.
		{name: "stream id going down", isConnection: true, goAway: http2.ErrCodeStreamClosed,
			send: func(rc *rawConn, _ *blockingHandler) {
				rc.request(5, "GET", "/", true)
				rc.request(3, "GET", "/", true)
			}},
		{name: "WINDOW_UPDATE overflows the connection", isConnection: true, goAway: http2.ErrCodeFlowControl,
			send: func(rc *rawConn, _ *blockingHandler) { rc.check(rc.fr.WriteWindowUpdate(0, 1<<31-1)) }},
		{name: "WINDOW_UPDATE overflows a stream", stream: 1, code: http2.ErrCodeFlowControl,
			send: func(rc *rawConn, h *blockingHandler) {
				rc.request(1, "GET", "/block", true)
				recv(rc.t, "the handler", h.started)
				rc.check(rc.fr.WriteWindowUpdate(1, 1<<31-1))
			}},
		{name: "WINDOW_UPDATE of 0 on a stream", stream: 1, code: http2.ErrCodeProtocol,
			send: func(rc *rawConn, h *blockingHandler) {
				rc.request(1, "GET", "/block", true)
				recv(rc.t, "the handler", h.started)
				rc.check(rc.fr.WriteWindowUpdate(1, 0))
			}},
		{name: "DATA beyond the stream's window", stream: 1, code: http2.ErrCodeFlowControl,
			send: func(rc *rawConn, h *blockingHandler) {
				rc.request(1, "POST", "/block", false)
				recv(rc.t, "the handler", h.started)
				// 256 KiB is the stream's window; the handler reads nothing.
				for range 16 {
					rc.check(rc.fr.WriteData(1, false, window))
				}
				rc.check(rc.fr.WriteData(1, false, []byte("x")))
			}},
		{name: "DATA beyond the connection's window", isConnection: true, goAway: http2.ErrCodeFlowControl,
			send: func(rc *rawConn, h *blockingHandler) {
				// 1 MiB is the connection's window: four streams fill it.
				for i := range 4 {
					id := uint32(2*i + 1)
					rc.request(id, "POST", "/block", false)
					recv(rc.t, "the handler", h.started)
					for range 16 {
						rc.check(rc.fr.WriteData(id, false, window))
					}
				}
				rc.request(9, "POST", "/block", false)
				rc.check(rc.fr.WriteData(9, false, []byte("x")))
			}},
		{name: "content-length larger than the body", stream: 1, code: http2.ErrCodeProtocol,
			send: func(rc *rawConn, h *blockingHandler) {
				rc.request(1, "POST", "/block", false, "content-length", "10")
				rc.check(rc.fr.WriteData(1, true, []byte("12345")))
			}},
		{name: "content-length smaller than the body", stream: 1, code: http2.ErrCodeProtocol,
			send: func(rc *rawConn, h *blockingHandler) {
				rc.request(1, "POST", "/block", false, "content-length", "3")
				rc.check(rc.fr.WriteData(1, false, []byte("12345")))
			}},
		{name: "content-length with no body", stream: 1, code: http2.ErrCodeProtocol,
			send: func(rc *rawConn, h *blockingHandler) {
				rc.request(1, "POST", "/block", true, "content-length", "3")
			}},
		{name: "trailers without END_STREAM", stream: 1, code: http2.ErrCodeProtocol,
			send: func(rc *rawConn, h *blockingHandler) {
				rc.request(1, "POST", "/block", false)
				recv(rc.t, "the handler", h.started)
				rc.enc.WriteField(hpackField("x-trailer", "v"))
				rc.check(rc.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: rc.hbuf.Bytes(), EndHeaders: true}))
			}},
		{name: "connection-specific header", stream: 1, code: http2.ErrCodeProtocol,
			send: func(rc *rawConn, h *blockingHandler) {
				rc.request(1, "GET", "/", true, "connection", "keep-alive")
			}},
		{name: "no :path", stream: 1, code: http2.ErrCodeProtocol,
			send: func(rc *rawConn, h *blockingHandler) {
				rc.hbuf.Reset()
				rc.enc.WriteField(hpackField(":method", "GET"))
				rc.enc.WriteField(hpackField(":scheme", "http"))
				rc.check(rc.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: rc.hbuf.Bytes(), EndHeaders: true, EndStream: true}))
			}},
		{name: "CONTINUATION without HEADERS", isConnection: true, goAway: http2.ErrCodeProtocol,
			send: func(rc *rawConn, _ *blockingHandler) {
				rc.check(rc.fr.WriteContinuation(1, true, []byte{0x82}))
			}},
		{name: "frame larger than 16384", isConnection: true, goAway: http2.ErrCodeFrameSize,
			send: func(rc *rawConn, _ *blockingHandler) {
				rc.request(1, "POST", "/", false)
				_, err := rc.c.Write(rawFrame(http2.FrameData, 0, 1, make([]byte, 20000)))
				rc.check(err)
			}},
		{name: "PUSH_PROMISE from a client", isConnection: true, goAway: http2.ErrCodeProtocol,
			send: func(rc *rawConn, _ *blockingHandler) {
				rc.request(1, "GET", "/block", false)
				rc.check(rc.fr.WritePushPromise(http2.PushPromiseParam{StreamID: 1, PromiseID: 2, BlockFragment: []byte{0x82}, EndHeaders: true}))
			}},
		{name: "WINDOW_UPDATE of 0 on idle stream", isConnection: true, goAway: http2.ErrCodeProtocol,
			send: func(rc *rawConn, _ *blockingHandler) { rc.check(rc.fr.WriteWindowUpdate(9, 0)) }},
		{name: "RST_STREAM on idle stream", isConnection: true, goAway: http2.ErrCodeProtocol,
			send: func(rc *rawConn, _ *blockingHandler) { rc.check(rc.fr.WriteRSTStream(7, http2.ErrCodeCancel)) }},
		{name: "SETTINGS with a bad window", isConnection: true, goAway: http2.ErrCodeFlowControl,
			send: func(rc *rawConn, _ *blockingHandler) {
				rc.check(rc.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1 << 31}))
			}},
		{name: "DATA after END_STREAM", stream: 1, code: http2.ErrCodeStreamClosed,
			send: func(rc *rawConn, h *blockingHandler) {
				rc.request(1, "GET", "/block", true)
				recv(rc.t, "the handler", h.started)
				rc.check(rc.fr.WriteData(1, false, []byte("x")))
			}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := newBlockingHandler()
			defer close(h.release)
			ts := startServer(t, h, serverOpts{})
			var settings []http2.Setting
			if !tc.noSettings {
				settings = []http2.Setting{}
			}
			rc := dialRaw(t, ts.addr, settings)
			tc.send(rc, h)
			if tc.isConnection {
				ga := rc.goAway()
				if ga.ErrCode != tc.goAway {
					t.Fatalf("GOAWAY %v (%q), want %v", ga.ErrCode, ga.DebugData(), tc.goAway)
				}
				rc.ended()
				waitUntil(t, "the server to drop the connection", func() bool { return ts.h2.ConnCount() == 0 })
				return
			}
			if code := rc.rst(tc.stream); code != tc.code {
				t.Fatalf("RST_STREAM %v, want %v", code, tc.code)
			}
			rc.ping()
			rc.request(101, "GET", "/", true)
			if status, body := rc.response(101); status != "200" || string(body) != "ok" {
				t.Fatalf("after the stream error: %s %q", status, body)
			}
		})
	}
}
