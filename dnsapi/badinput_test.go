package dnsapi_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/discoverd/discoverd/api"
	"github.com/discoverd/discoverd/dnsapi"
	"github.com/discoverd/discoverd/internal/testnode"
	"github.com/discoverd/discoverd/node"
)

// header is a DNS header: id 0x1234, flags, and the section counts.
func header(flags uint16, qd, an, ns, ar uint16) []byte {
	b := make([]byte, 12)
	binary.BigEndian.PutUint16(b[0:], 0x1234)
	binary.BigEndian.PutUint16(b[2:], flags)
	binary.BigEndian.PutUint16(b[4:], qd)
	binary.BigEndian.PutUint16(b[6:], an)
	binary.BigEndian.PutUint16(b[8:], ns)
	binary.BigEndian.PutUint16(b[10:], ar)
	return b
}

// wireName encodes labels as they are on the wire, whatever they hold.
func wireName(labels ...string) []byte {
	var b []byte
	for _, l := range labels {
		b = append(b, byte(len(l)))
		b = append(b, l...)
	}
	return append(b, 0)
}

func question(name []byte, qtype, class uint16) []byte {
	b := append([]byte(nil), name...)
	return binary.BigEndian.AppendUint16(binary.BigEndian.AppendUint16(b, qtype), class)
}

// rawUDP sends pkt and returns the answer, or nil when none came.
func rawUDP(t *testing.T, addr string, pkt []byte) *dns.Msg {
	t.Helper()
	c, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write(pkt); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(time.Second))
	buf := make([]byte, 65535)
	n, err := c.Read(buf)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	m := new(dns.Msg)
	if err := m.Unpack(buf[:n]); err != nil {
		t.Fatalf("the answer to a bad packet does not parse: %v", err)
	}
	return m
}

// TestDNSBadInput sends malformed and odd queries: each gets FORMERR,
// NXDOMAIN, NOTIMP or REFUSED (or, without even a header to answer, no
// answer), and the server keeps answering.
func TestDNSBadInput(t *testing.T) {
	s := startDNS(t, time.Minute, dnsapi.Options{})
	s.addService("web")
	s.register("web", "i1", "10.0.0.1:80", "http")
	const rd = 0x0100
	q := func(labels ...string) []byte {
		return append(header(rd, 1, 0, 0, 0), question(wireName(labels...), dns.TypeA, dns.ClassINET)...)
	}
	long := strings.Repeat("a", 63)
	noAnswer := -1
	cases := []struct {
		name  string
		pkt   []byte
		rcode int
	}{
		{"empty packet", nil, noAnswer},
		{"shorter than a header", []byte("hello"), noAnswer},
		{"no question", header(rd, 0, 0, 0, 0), dns.RcodeFormatError},
		{"two questions", append(q("web", "discoverd"), question(wireName("web", "discoverd"), dns.TypeA, dns.ClassINET)...)[:0:0], dns.RcodeFormatError},
		{"question count past the end", header(rd, 1, 0, 0, 0), dns.RcodeFormatError},
		{"cut in the name", q("web", "discoverd")[:16], dns.RcodeFormatError},
		{"cut in the type", q("web", "discoverd")[:12+15+1], dns.RcodeFormatError},
		{"name longer than 255", q(long, long, long, long, "discoverd"), dns.RcodeFormatError},
		{"label longer than 63", q(long+"a", "discoverd"), dns.RcodeFormatError},
		{"compression pointer loop", append(header(rd, 1, 0, 0, 0), 0xc0, 12, 0, 1, 0, 1), dns.RcodeFormatError},
		{"answer records in a query", append(q("web", "discoverd"), 0)[:0:0], dns.RcodeFormatError},
		{"a response, not a query", append(header(0x8000, 1, 0, 0, 0), question(wireName("web", "discoverd"), dns.TypeA, dns.ClassINET)...), noAnswer},
		{"opcode update", append(header(5<<11, 1, 0, 0, 0), question(wireName("web", "discoverd"), dns.TypeA, dns.ClassINET)...), dns.RcodeNotImplemented},
		{"space in a label", q("we b", "discoverd"), dns.RcodeNameError},
		{"NUL and high bytes in a label", q("w\x00\xff", "discoverd"), dns.RcodeNameError},
		{"dot inside a label", q("web.x", "discoverd"), dns.RcodeNameError},
		{"underscore service", q("_web", "discoverd"), dns.RcodeNameError},
		{"upper case id", q("I1", "web", "_i", "discoverd"), dns.RcodeSuccess},
		{"id too long", q(strings.Repeat("a", 63), strings.Repeat("b", 63), strings.Repeat("c", 3), "web", "_i", "discoverd"), dns.RcodeNameError},
		{"unknown service of 63 characters", q(long, "discoverd"), dns.RcodeNameError},
		{"empty labels are the root", q(), dns.RcodeRefused},
		{"class CHAOS", append(header(rd, 1, 0, 0, 0), question(wireName("version", "bind"), dns.TypeTXT, dns.ClassCHAOS)...), dns.RcodeRefused},
		{"class CHAOS in the zone", append(header(rd, 1, 0, 0, 0), question(wireName("web", "discoverd"), dns.TypeA, dns.ClassCHAOS)...), dns.RcodeRefused},
		{"outside the zone", q("example", "org"), dns.RcodeRefused},
	}
	// Two questions, and an answer record in a query, built whole.
	two := append(header(rd, 2, 0, 0, 0), question(wireName("web", "discoverd"), dns.TypeA, dns.ClassINET)...)
	cases[3].pkt = append(two, question(wireName("web", "discoverd"), dns.TypeA, dns.ClassINET)...)
	rr := append(wireName("web", "discoverd"), 0, 1, 0, 1, 0, 0, 0, 0, 0, 4, 10, 0, 0, 1)
	an := append(header(rd, 1, 2, 0, 0), question(wireName("web", "discoverd"), dns.TypeA, dns.ClassINET)...)
	cases[10].pkt = append(append(an, rr...), rr...)

	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := rawUDP(t, s.addr, c.pkt)
			switch {
			case c.rcode == noAnswer && r != nil:
				t.Errorf("answered %s, want no answer", dns.RcodeToString[r.Rcode])
			case c.rcode != noAnswer && r == nil:
				t.Errorf("no answer, want %s", dns.RcodeToString[c.rcode])
			case r != nil && (r.Rcode != c.rcode || r.Id != 0x1234 || !r.Response):
				t.Errorf("answered %s id %#x qr %v, want %s", dns.RcodeToString[r.Rcode], r.Id, r.Response, dns.RcodeToString[c.rcode])
			}
			// Still answering.
			if got := render(query(t, s.addr, "udp", "web.discoverd.", dns.TypeA, 0).Answer); len(got) != 1 {
				t.Fatalf("after %s: web.discoverd. A = %q", c.name, got)
			}
		})
	}

	// Over TCP too: a garbage message gets FORMERR or a closed connection,
	// and the next connection is answered.
	conn, err := net.Dial("tcp", s.addr)
	if err != nil {
		t.Fatal(err)
	}
	garbage := []byte{0x12, 0x34, 0x01, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0, 0x3f, 'x'}
	conn.Write(append([]byte{0, byte(len(garbage))}, garbage...))
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	var lenBuf [2]byte
	if _, err := io.ReadFull(conn, lenBuf[:]); err == nil {
		body := make([]byte, binary.BigEndian.Uint16(lenBuf[:]))
		if _, err := io.ReadFull(conn, body); err != nil {
			t.Fatal(err)
		}
		m := new(dns.Msg)
		if err := m.Unpack(body); err != nil || m.Rcode != dns.RcodeFormatError {
			t.Fatalf("TCP garbage answered %v (%v), want FORMERR", m, err)
		}
	}
	conn.Close()
	if got := render(query(t, s.addr, "tcp", "web.discoverd.", dns.TypeA, 0).Answer); len(got) != 1 {
		t.Fatalf("after TCP garbage: web.discoverd. A = %q", got)
	}
	if n := counter(t, s.n.Metrics(), "discoverd_dns_rejected_total", "", ""); n == 0 {
		t.Error("discoverd_dns_rejected_total is 0 after malformed packets")
	}
}

// fakeWriter is a dns.ResponseWriter that keeps what is written.
type fakeWriter struct {
	local net.Addr
	out   []byte
}

func (w *fakeWriter) LocalAddr() net.Addr { return w.local }
func (w *fakeWriter) RemoteAddr() net.Addr {
	return &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 5353}
}
func (w *fakeWriter) WriteMsg(m *dns.Msg) error {
	b, err := m.Pack()
	if err != nil {
		return err
	}
	w.out = b
	return nil
}
func (w *fakeWriter) Write(b []byte) (int, error) { w.out = bytes.Clone(b); return len(b), nil }
func (w *fakeWriter) Close() error                { return nil }
func (w *fakeWriter) TsigStatus() error           { return nil }
func (w *fakeWriter) TsigTimersOnly(bool)         {}
func (w *fakeWriter) Hijack()                     {}

// FuzzServeDNS feeds raw packets through what the server does with one:
// parse (a packet that does not parse is the library's FORMERR), accept
// (one question, a query), then the handler. The handler must not panic,
// must answer, and its answer must parse, carry the query's id and fit a
// UDP client's buffer.
func FuzzServeDNS(f *testing.F) {
	for _, name := range []string{"web.discoverd.", "_web._http.discoverd.", "leader.web.discoverd.", "i1.web._i.discoverd.", "discoverd.", "nope.discoverd.", "example.org.", "a.b.c.d.discoverd.", "we\\ b.discoverd."} {
		for _, qt := range []uint16{dns.TypeA, dns.TypeAAAA, dns.TypeSRV, dns.TypeANY, dns.TypeSOA, dns.TypeTXT} {
			m := new(dns.Msg)
			m.SetQuestion(name, qt)
			if qt == dns.TypeSRV {
				m.SetEdns0(1232, false)
			}
			b, err := m.Pack()
			if err != nil {
				f.Fatal(err)
			}
			f.Add(b, qt == dns.TypeANY)
		}
	}
	f.Add([]byte("hello"), false)
	f.Add(header(0x0100, 0, 0, 0, 0), true)
	f.Add(append(header(0x0100, 1, 0, 0, 0), 0xc0, 12, 0, 1, 0, 1), false)

	ts := testnode.Start(f, testnode.Options{TTL: time.Hour})
	n := ts.Node()
	if _, err := n.AddService(f.Context(), "web", apiServiceConfig()); err != nil {
		f.Fatal(err)
	}
	registerNode(f, n, "web", "i1", "10.0.0.1:80")
	registerNode(f, n, "web", "v6", "[fd00::1]:81")
	registerNode(f, n, "web", "h", "db.example.net:82")
	h := dnsapi.NewHandler(n, dnsapi.Options{})

	f.Fuzz(func(t *testing.T, pkt []byte, tcp bool) {
		req := new(dns.Msg)
		if err := req.Unpack(pkt); err != nil {
			return
		}
		if req.Response || req.Opcode != dns.OpcodeQuery || len(req.Question) != 1 {
			return // the server's accept function answers these itself
		}
		w := &fakeWriter{local: &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 53}}
		if tcp {
			w.local = &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 53}
		}
		h.ServeDNS(w, req)
		if w.out == nil {
			t.Fatalf("no answer to %v", req)
		}
		resp := new(dns.Msg)
		if err := resp.Unpack(w.out); err != nil {
			t.Fatalf("answer does not parse: %v", err)
		}
		if resp.Id != req.Id || !resp.Response {
			t.Fatalf("answer id %d qr %v to query %d", resp.Id, resp.Response, req.Id)
		}
		if !tcp {
			limit := dns.MinMsgSize
			if opt := req.IsEdns0(); opt != nil {
				limit = max(int(opt.UDPSize()), dns.MinMsgSize)
			}
			if len(w.out) > limit {
				t.Fatalf("UDP answer of %d bytes for a buffer of %d", len(w.out), limit)
			}
		}
	})
}

func apiServiceConfig() api.ServiceConfig { return api.ServiceConfig{} }

func registerNode(tb testing.TB, n *node.Node, service, id, addr string) {
	tb.Helper()
	inst := &api.Instance{Addr: addr, Proto: "tcp"}
	if err := api.PrepareInstance(inst, id); err != nil {
		tb.Fatal(err)
	}
	if _, err := n.Heartbeat(context.Background(), service, inst); err != nil {
		tb.Fatal(err)
	}
}
