package node

import (
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
	"github.com/rs/zerolog"
)

// raftConnByte opens every Raft connection. HTTP requests start with an ASCII
// method name and TLS with 0x16, so one byte tells the protocols apart and a
// node needs one port for both, as in the original discoverd.
const raftConnByte = 0xd1

// RaftALPN is the ALPN protocol of Raft connections when the port speaks
// TLS: after the handshake it tells Raft from HTTP, whose protocols are h2
// and http/1.1.
const RaftALPN = "discoverd-raft"

// firstByteTimeout bounds how long an accepted connection may stay silent
// before it is dropped, so idle connections cannot pile up unclassified.
const firstByteTimeout = 10 * time.Second

// portMux accepts connections on the node's one port and hands each to the
// HTTP listener or the Raft stream layer by its first byte.
type portMux struct {
	ln        net.Listener
	acc       *acceptor
	advertise net.Addr
	http      *chanListener
	// raft is the listener of the current voter's transport, nil while the
	// node is a proxy (Raft connections are then refused).
	raft      atomic.Pointer[chanListener]
	closeOnce sync.Once
	// tls, when set, makes the port TLS only: Raft is told from HTTP by
	// ALPN, and a Raft connection must present a certificate verified
	// against the cluster's CA.
	tls *tls.Config
	// countConn and nodeConn: see Config.CountConn (used with tls only).
	countConn func(net.Conn) net.Conn
	nodeConn  func(net.Conn)
}

func newPortMux(ln net.Listener, advertise net.Addr, log zerolog.Logger, tlsConfig *tls.Config, countConn func(net.Conn) net.Conn, nodeConn func(net.Conn)) *portMux {
	m := &portMux{
		countConn: countConn,
		nodeConn:  nodeConn,
		ln:        ln,
		acc:       newAcceptor(ln, log),
		tls:       tlsConfig,
		advertise: advertise,
		http:      newChanListener(ln.Addr()),
	}
	go m.serve()
	return m
}

func (m *portMux) serve() {
	for {
		conn, err := m.acc.accept()
		if err != nil {
			m.close()
			return
		}
		go m.route(conn)
	}
}

func (m *portMux) route(conn net.Conn) {
	// One byte, read without a buffer: a buffered reader would stay with
	// the connection for its whole life, and a node holds many thousands
	// of idle streams.
	var first [1]byte
	conn.SetReadDeadline(time.Now().Add(firstByteTimeout))
	_, err := io.ReadFull(conn, first[:])
	conn.SetReadDeadline(time.Time{})
	if err != nil {
		conn.Close()
		return
	}
	if m.tls != nil {
		if m.countConn != nil {
			conn = m.countConn(conn)
		}
		m.routeTLS(conn, &peekedConn{Conn: conn, first: first[0], unread: true}, first[0])
		return
	}
	if first[0] == raftConnByte {
		if l := m.raft.Load(); l != nil {
			l.deliver(conn)
		} else {
			conn.Close()
		}
		return
	}
	m.http.deliver(&peekedConn{Conn: conn, first: first[0], unread: true})
}

// tlsHandshakeByte opens every TLS connection (a handshake record).
const tlsHandshakeByte = 0x16

var plainOnTLSAnswer = []byte("HTTP/1.0 400 Bad Request\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\nThis port speaks TLS only: use https://\n")

// routeTLS completes the handshake, then hands the connection to Raft (ALPN
// RaftALPN, from a verified node) or to HTTP. Anything but TLS is closed.
// counted is the connection as countConn returned it (conn wraps it).
func (m *portMux) routeTLS(counted, conn net.Conn, first byte) {
	if first != tlsHandshakeByte {
		// Most likely plain HTTP: say what is wrong, as net/http does.
		conn.SetWriteDeadline(time.Now().Add(firstByteTimeout))
		conn.Write(plainOnTLSAnswer)
		conn.Close()
		return
	}
	tc := tls.Server(conn, m.tls)
	tc.SetDeadline(time.Now().Add(firstByteTimeout))
	if err := tc.Handshake(); err != nil {
		tc.Close()
		return
	}
	tc.SetDeadline(time.Time{})
	st := tc.ConnectionState()
	if st.NegotiatedProtocol == RaftALPN {
		l := m.raft.Load()
		if l == nil || len(st.VerifiedChains) == 0 {
			tc.Close()
			return
		}
		if m.nodeConn != nil {
			m.nodeConn(counted)
		}
		l.deliver(tc)
		return
	}
	m.http.deliver(tc)
}

func (m *portMux) close() {
	m.closeOnce.Do(func() {
		m.ln.Close()
		m.acc.close()
		m.http.Close()
		if l := m.raft.Load(); l != nil {
			l.Close()
		}
	})
}

// newRaftListener gives a new voter its own listener for Raft connections;
// a stopped voter's transport closed the previous one.
func (m *portMux) newRaftListener() *chanListener {
	l := newChanListener(m.advertise)
	m.raft.Store(l)
	return l
}

// peekedConn is a connection whose first byte the mux read.
type peekedConn struct {
	net.Conn
	first  byte
	unread bool
}

func (c *peekedConn) Read(p []byte) (int, error) {
	if c.unread && len(p) > 0 {
		c.unread = false
		p[0] = c.first
		return 1, nil
	}
	return c.Conn.Read(p)
}

// NetConn is the accepted connection.
func (c *peekedConn) NetConn() net.Conn { return c.Conn }

// chanListener is a net.Listener fed by the mux.
type chanListener struct {
	addr   net.Addr
	conns  chan net.Conn
	done   chan struct{}
	closed sync.Once
}

func newChanListener(addr net.Addr) *chanListener {
	return &chanListener{addr: addr, conns: make(chan net.Conn, 64), done: make(chan struct{})}
}

func (l *chanListener) deliver(c net.Conn) {
	select {
	case l.conns <- c:
	case <-l.done:
		c.Close()
	}
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *chanListener) Close() error {
	l.closed.Do(func() { close(l.done) })
	return nil
}

func (l *chanListener) Addr() net.Addr { return l.addr }

// raftStream is the raft.StreamLayer over the shared port.
type raftStream struct {
	*chanListener
	// tls, when set, dials Raft over mutual TLS (ALPN RaftALPN).
	tls *tls.Config
}

func (s raftStream) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	if s.tls != nil {
		conn, err := tls.DialWithDialer(&net.Dialer{Timeout: timeout}, "tcp", string(address), s.tls)
		if err != nil {
			return nil, err
		}
		if conn.ConnectionState().NegotiatedProtocol != RaftALPN {
			conn.Close()
			return nil, fmt.Errorf("%s does not speak Raft over TLS", address)
		}
		return conn, nil
	}
	conn, err := net.DialTimeout("tcp", string(address), timeout)
	if err != nil {
		return nil, err
	}
	conn.SetWriteDeadline(time.Now().Add(timeout))
	if _, err := conn.Write([]byte{raftConnByte}); err != nil {
		conn.Close()
		return nil, err
	}
	conn.SetWriteDeadline(time.Time{})
	return conn, nil
}

// advertisedAddr is a net.Addr that is a host:port string, which is what
// the Raft transport reports as this node's address.
type advertisedAddr string

func (a advertisedAddr) Network() string { return "tcp" }
func (a advertisedAddr) String() string  { return string(a) }
