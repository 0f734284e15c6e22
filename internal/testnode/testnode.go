package testnode

import (
	"crypto/tls"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/discoverd/discoverd/auth"
	"github.com/discoverd/discoverd/bus"
	"github.com/discoverd/discoverd/connlimit"
	"github.com/discoverd/discoverd/httpapi"
	"github.com/discoverd/discoverd/node"
	"github.com/discoverd/discoverd/pki"
)

// Options says how to run a Server.
type Options struct {
	// TTL is the instance TTL; zero means one second.
	TTL time.Duration
	// NATS runs the node's embedded NATS server on a free loopback port,
	// kept across restarts so that NATS clients can reconnect to it.
	NATS bool
	// Secure runs the node with TLS on every port and the tokens of
	// AuthFile (see CAFile, AdminSecret, ServiceSecret, ReadSecret).
	Secure bool
	// MaxConnsPerClient limits each client address's HTTP connections and
	// streams as --max-conns-per-client does; 0 means no limit.
	MaxConnsPerClient int
}

// Tokens of a Secure server.
const (
	AdminSecret   = "secret-admin"
	ServiceSecret = "secret-web" // a service token for "web" and "web-*"
	ReadSecret    = "secret-read"
	AuthFile      = `{"tokens": [
  {"name": "ops",  "secret": "` + AdminSecret + `", "role": "admin"},
  {"name": "web",  "secret": "` + ServiceSecret + `", "role": "service", "services": ["web", "web-*"]},
  {"name": "dash", "secret": "` + ReadSecret + `", "role": "read"}
]}`
)

// Server is a single-node discoverd in process: a node and its HTTP API.
// Its methods are for the goroutine of the test that started it.
type Server struct {
	tb  testing.TB
	cfg node.Config
	n   *node.Node
	srv *http.Server
	// caFile and store are a Secure server's CA and tokens.
	caFile string
	store  *auth.Store
	opts   httpapi.Options
	// limits counts client connections, across restarts.
	limits *connlimit.Limiter
	// applied is the node's applied index when it was last stopped: a
	// restarted node serves only once it has applied that much again.
	applied uint64
}

// Start starts a Server on a fresh data dir and waits until it leads. It
// stops when the test ends.
func Start(tb testing.TB, o Options) *Server {
	tb.Helper()
	if o.TTL <= 0 {
		o.TTL = time.Second
	}
	s := &Server{tb: tb, cfg: node.Config{
		DataDir:             tb.TempDir(),
		Addr:                "127.0.0.1:0",
		InstanceTTL:         o.TTL,
		ExpiryCheckInterval: 100 * time.Millisecond,
		// A single voter elects itself after one timeout: a short one
		// keeps each test's start quick.
		RaftHeartbeatTimeout: 100 * time.Millisecond,
		Log:                  zerolog.Nop(),
	}, limits: connlimit.New(connlimit.Config{Max: o.MaxConnsPerClient})}
	if o.NATS {
		s.cfg.NATS = true
		s.cfg.NATSAddr = "127.0.0.1:-1"
	}
	if o.Secure {
		s.secure()
		// Counted under the TLS layer, as cmd/discoverd does.
		s.cfg.CountConn, s.cfg.NodeConn = s.limits.Conn, s.limits.NodeConn
	}
	s.StartNode()
	s.Serve()
	tb.Cleanup(s.Stop)
	return s
}

// StartNode starts the node, not its HTTP API, on the data dir and address
// of the first start, and waits until it leads and has applied all it had
// applied before it was stopped (a new leader applies its old log only
// after it leads). Between StartNode and Serve, a test can change the state
// through Node while no HTTP client can see it.
func (s *Server) StartNode() {
	s.tb.Helper()
	n, err := node.New(s.cfg)
	if err != nil {
		s.tb.Fatal(err)
	}
	s.n = n
	if err := n.RegisterMetrics(s.limits); err != nil {
		s.tb.Fatal(err)
	}
	s.cfg.Addr = n.Addr()
	if s.cfg.NATS {
		s.cfg.NATSAddr = strings.TrimPrefix(n.NATSURL(), "nats://")
	}
	deadline := time.Now().Add(10 * time.Second)
	for !n.IsLeader() || !n.Ready() || n.AppliedIndex() < s.applied {
		if time.Now().After(deadline) {
			s.tb.Fatal("the node did not become leader within 10s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Serve starts answering HTTP.
func (s *Server) Serve() {
	s.srv = httpapi.NewServer(httpapi.New(s.n, s.opts), httpapi.ServerOptions{})
	httpapi.EnableHTTP2(s.srv)
	ln := s.n.HTTPListener()
	if s.cfg.TLS != nil {
		s.limits.WireHandler(s.srv)
	} else {
		ln = s.limits.Wire(s.srv, ln)
	}
	go s.srv.Serve(ln)
}

// StopHTTP stops answering HTTP, keeping the node (and NATS) running.
func (s *Server) StopHTTP() {
	s.n.EndStreams()
	s.srv.Close()
	s.srv = nil
}

// Stop stops the HTTP API and the node; the data dir stays for StartNode.
// Stopping a stopped Server does nothing.
func (s *Server) Stop() {
	if s.n == nil {
		return
	}
	s.applied = s.n.AppliedIndex()
	s.n.EndStreams()
	if s.srv != nil {
		s.srv.Close()
	}
	s.n.Close()
	s.n, s.srv = nil, nil
}

// Restart stops the server and starts it again on the same data dir and
// addresses.
func (s *Server) Restart() {
	s.tb.Helper()
	s.Stop()
	s.StartNode()
	s.Serve()
}

// Node is the running node, nil while the Server is stopped.
func (s *Server) Node() *node.Node { return s.n }

// Addr is the HTTP address, host:port, the same across restarts.
func (s *Server) Addr() string { return s.cfg.Addr }

// URL is the HTTP base URL.
func (s *Server) URL() string {
	if s.caFile != "" {
		return "https://" + s.cfg.Addr
	}
	return "http://" + s.cfg.Addr
}

// CAFile is a Secure server's CA (PEM), empty otherwise.
func (s *Server) CAFile() string { return s.caFile }

// Auth is a Secure server's tokens, nil otherwise.
func (s *Server) Auth() *auth.Store { return s.store }

// PeerTLS is the TLS configuration a Secure server presents to other nodes
// (its certificate from the test CA): a client using it is taken for a node.
func (s *Server) PeerTLS() *tls.Config { return s.cfg.PeerTLS }

// secure makes a CA, a certificate for 127.0.0.1 and the tokens of
// AuthFile, and sets the node's TLS and auth as cmd/discoverd does.
func (s *Server) secure() {
	dir := s.tb.TempDir()
	if _, _, err := pki.CreateCA(dir); err != nil {
		s.tb.Fatal(err)
	}
	cert, key, err := pki.CreateCert(dir, "node", []string{"127.0.0.1"})
	if err != nil {
		s.tb.Fatal(err)
	}
	s.caFile = filepath.Join(dir, pki.CAFile)
	rel, err := pki.Load(pki.Files{Cert: cert, Key: key, CA: s.caFile})
	if err != nil {
		s.tb.Fatal(err)
	}
	set, err := auth.Parse([]byte(AuthFile))
	if err != nil {
		s.tb.Fatal(err)
	}
	s.store = auth.NewStore(set, zerolog.Nop())
	s.cfg.TLS = rel.ServerConfig([]string{"h2", "http/1.1", node.RaftALPN})
	s.cfg.PeerTLS = rel.ClientConfig(nil)
	s.cfg.NATSTLS = &bus.ServerTLS{Client: rel.StaticServerConfig(false), Peer: rel.StaticServerConfig(true)}
	s.cfg.NATSAuth = &bus.ServerAuth{Tokens: set.Tokens(), NodePassword: "test-node-password"}
	s.opts = httpapi.Options{Auth: s.store, PeerTLS: s.cfg.PeerTLS}
}

// NATSURL is the NATS client URL, empty without NATS.
func (s *Server) NATSURL() string {
	if !s.cfg.NATS {
		return ""
	}
	return "nats://" + s.cfg.NATSAddr
}
