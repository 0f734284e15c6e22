package h2server_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/discoverd/discoverd/h2server"
)

// onceSource gives its bytes at the first Fill and ends the stream.
type onceSource struct{ b []byte }

func (s *onceSource) Fill(dst []byte) ([]byte, bool) { return append(dst, s.b...), false }
func (s *onceSource) Done()                          {}

// fuzzHandler serves every kind of response: small, echoed, detached,
// flushed, panicking.
func fuzzHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	mux.HandleFunc("/echo", func(w http.ResponseWriter, r *http.Request) { io.Copy(w, r.Body) })
	mux.HandleFunc("/detach", func(w http.ResponseWriter, r *http.Request) {
		if _, ok := h2server.Detach(w, &onceSource{b: []byte("event: x\n\n")}); !ok {
			io.WriteString(w, "not detached")
		}
	})
	mux.HandleFunc("/flush", func(w http.ResponseWriter, r *http.Request) {
		for range 40 {
			w.Write(make([]byte, 4096))
			w.(http.Flusher).Flush()
		}
	})
	mux.HandleFunc("/panic", func(w http.ResponseWriter, r *http.Request) { panic(http.ErrAbortHandler) })
	return mux
}

// seedConn writes frames for a seed.
type seedConn struct {
	buf bytes.Buffer
	fr  *http2.Framer
	enc *hpack.Encoder
	hb  bytes.Buffer
}

func newSeed() *seedConn {
	s := &seedConn{}
	s.fr = http2.NewFramer(&s.buf, nil)
	s.fr.AllowIllegalWrites = true
	s.enc = hpack.NewEncoder(&s.hb)
	return s
}

func (s *seedConn) block(method, path string, extra ...string) []byte {
	s.hb.Reset()
	s.enc.WriteField(hpack.HeaderField{Name: ":method", Value: method})
	s.enc.WriteField(hpack.HeaderField{Name: ":scheme", Value: "http"})
	s.enc.WriteField(hpack.HeaderField{Name: ":authority", Value: "x"})
	s.enc.WriteField(hpack.HeaderField{Name: ":path", Value: path})
	for i := 0; i+1 < len(extra); i += 2 {
		s.enc.WriteField(hpack.HeaderField{Name: extra[i], Value: extra[i+1]})
	}
	return append([]byte(nil), s.hb.Bytes()...)
}

func (s *seedConn) req(id uint32, method, path string, end bool, extra ...string) *seedConn {
	s.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: s.block(method, path, extra...), EndStream: end, EndHeaders: true})
	return s
}

func (s *seedConn) bytes() []byte { return s.buf.Bytes() }

// fuzzSeeds are valid and invalid frame sequences, as sent after the
// preface and the client's SETTINGS.
func fuzzSeeds() [][]byte {
	var seeds [][]byte
	add := func(s *seedConn) { seeds = append(seeds, append([]byte(nil), s.bytes()...)) }

	add(newSeed().req(1, "GET", "/", true))
	s := newSeed().req(1, "POST", "/echo", false, "content-length", "5")
	s.fr.WriteData(1, true, []byte("hello"))
	add(s)
	s = newSeed().req(1, "GET", "/detach", true)
	s.fr.WriteRSTStream(1, http2.ErrCodeCancel)
	add(s)
	s = newSeed()
	s.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1}, http2.Setting{ID: http2.SettingHeaderTableSize, Val: 0})
	s.req(1, "GET", "/flush", true).req(3, "GET", "/detach", true)
	s.fr.WriteWindowUpdate(0, 100)
	s.fr.WriteWindowUpdate(1, 100)
	s.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1 << 20})
	add(s)
	s = newSeed()
	b := s.block("GET", "/", "x-a", "aaaaaaaaaaaaaaaa")
	s.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: b[:3], EndStream: true})
	s.fr.WriteContinuation(1, false, b[3:6])
	s.fr.WriteContinuation(1, true, b[6:])
	add(s)
	s = newSeed().req(1, "POST", "/echo", false)
	s.fr.WriteDataPadded(1, false, []byte("abc"), make([]byte, 10))
	s.hb.Reset()
	s.enc.WriteField(hpack.HeaderField{Name: "x-trailer", Value: "1"})
	s.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: s.hb.Bytes(), EndStream: true, EndHeaders: true})
	add(s)
	s = newSeed().req(1, "GET", "/panic", true).req(3, "HEAD", "/", true)
	s.fr.WritePriority(5, http2.PriorityParam{StreamDep: 5})
	s.fr.WriteRawFrame(0x20, 0, 0, []byte("unknown"))
	s.fr.WritePing(false, [8]byte{1})
	s.fr.WriteGoAway(0, http2.ErrCodeNo, nil)
	add(s)
	// Invalid ones.
	s = newSeed()
	s.fr.WriteData(1, true, []byte("x"))
	add(s)
	add(newSeed().req(2, "GET", "/", true))
	s = newSeed()
	s.fr.WriteContinuation(1, true, []byte{0x82})
	add(s)
	s = newSeed()
	s.fr.WriteWindowUpdate(0, 1<<31-1)
	add(s)
	s = newSeed().req(1, "POST", "/echo", false, "content-length", "2")
	s.fr.WriteData(1, true, []byte("hello"))
	s.req(3, "GET", "/", true).req(3, "GET", "/", true)
	add(s)
	s = newSeed().req(1, "GET", "/detach", false)
	s.fr.WriteData(1, false, []byte("x"))
	s.fr.WriteRSTStream(1, http2.ErrCodeCancel)
	s.fr.WriteData(1, true, []byte("y"))
	s.fr.WriteWindowUpdate(1, 0)
	add(s)
	return seeds
}

// frames cuts fuzz input into whole frames: a frame cut short is padded
// with zeros, so that the PING after it is read as a frame. A length past
// the largest frame is kept, and ends the input: the server reads no
// further.
func frames(data []byte) []byte {
	var out []byte
	for len(data) >= 9 {
		n := int(data[0])<<16 | int(data[1])<<8 | int(data[2])
		if n > 16384 {
			return append(out, data...)
		}
		take := min(len(data), 9+n)
		out = append(out, data[:take]...)
		out = append(out, make([]byte, 9+n-take)...)
		data = data[take:]
	}
	return out
}

// FuzzServerConn: whatever frames a client sends, the server does not
// panic, and answers a PING after them or ends the connection, in time.
func FuzzServerConn(f *testing.F) {
	for _, s := range fuzzSeeds() {
		f.Add(s)
	}
	ts := startServer(f, fuzzHandler(), serverOpts{maxStreams: 8, configure: func(hs *http.Server) {
		hs.MaxHeaderBytes = 2048
		hs.ErrorLog = log.New(io.Discard, "", 0)
	}})
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := net.DialTimeout("tcp", ts.addr, deadline)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		var in bytes.Buffer
		in.WriteString(http2.ClientPreface)
		in.Write([]byte{0, 0, 0, byte(http2.FrameSettings), 0, 0, 0, 0, 0})
		in.Write(frames(data))
		ping := [8]byte{'f', 'u', 'z', 'z', 'p', 'i', 'n', 'g'}
		in.Write([]byte{0, 0, 8, byte(http2.FramePing), 0, 0, 0, 0, 0})
		in.Write(ping[:])
		// Written while the answers are read: the server may write much
		// before it reads all.
		go c.Write(in.Bytes())
		for {
			fh, err := readFrameHeader(c)
			if err != nil {
				if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || isReset(err) {
					return // the server ended the connection
				}
				t.Fatalf("no PING answer or end of the connection: %v", err)
			}
			payload := make([]byte, fh.length)
			if _, err := io.ReadFull(c, payload); err != nil {
				if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || isReset(err) {
					return
				}
				t.Fatalf("reading a frame: %v", err)
			}
			if fh.length > 16384 {
				t.Fatalf("the server sent a frame of %d bytes", fh.length)
			}
			switch fh.typ {
			case http2.FrameGoAway:
				if len(payload) < 8 {
					t.Fatalf("short GOAWAY")
				}
				if binary.BigEndian.Uint32(payload[4:]) != 0 {
					return // a connection error: the server closes
				}
			case http2.FramePing:
				if fh.flags&http2.FlagPingAck != 0 && bytes.Equal(payload, ping[:]) {
					return
				}
			}
		}
	})
}

type frameHeader struct {
	length int
	typ    http2.FrameType
	flags  http2.Flags
}

func readFrameHeader(r io.Reader) (frameHeader, error) {
	var b [9]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return frameHeader{}, err
	}
	return frameHeader{length: int(b[0])<<16 | int(b[1])<<8 | int(b[2]), typ: http2.FrameType(b[3]), flags: http2.Flags(b[4])}, nil
}
