package bus

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"
)

// ClientAddrOff as ServerConfig.ClientAddr turns the client port off.
const ClientAddrOff = "off"

// ClusterName is the NATS cluster name of the voters' servers. A proxy's
// server has no cluster of its own (it is a leafnode), so it never collides
// with it.
const ClusterName = "discoverd"

// Tuning of the embedded server, set in buildOptions only.
const (
	// readyTimeout bounds how long StartServer waits for the listeners.
	readyTimeout = 10 * time.Second
	// maxPending is the outbound queue of one connection, in bytes. With
	// NoFastProducerStall, messages to a connection with 3/4 of it queued
	// are dropped (publishers are never made to wait), and a connection
	// over it is closed as a slow consumer.
	maxPending = 64 << 20
	// clientWriteDeadline: a client socket write blocked this long cuts the
	// client off (policy: close).
	clientWriteDeadline = 2 * time.Second
	// peerWriteDeadline: a route or leafnode write blocked this long is
	// retried (the server's default policy for routes and leafnodes), so a
	// busy peer link is not torn down by one slow write.
	peerWriteDeadline = 5 * time.Second
	// pingInterval and maxPingsOut detect a dead client or leafnode link
	// (a proxy's link to its voter) in about pingInterval*(maxPingsOut+1),
	// under one default heartbeat TTL. A client that sent anything within
	// the interval is not pinged.
	pingInterval = 3 * time.Second
	maxPingsOut  = 2
	// routePingInterval and routeMaxPingsOut detect a dead route between
	// voters in about 6-8 s.
	routePingInterval = 2 * time.Second
	routeMaxPingsOut  = 3
	// routePoolSize is the number of connections between two voters'
	// servers, so that one busy route does not serialize all traffic.
	routePoolSize = 3
	// leafSwitchTimeout bounds the wait for the old leafnode connection to
	// close when SetLeafRemotes switches voters; leafSwitchSettle then lets
	// the voters drop its interest (one route hop) before the new one
	// connects.
	leafSwitchTimeout = 2 * time.Second
	leafSwitchSettle  = 250 * time.Millisecond
	// tlsTimeout bounds a TLS handshake on any NATS port.
	tlsTimeout = 5 * time.Second
)

// Defaults of the client limits (ServerConfig.MaxConns, MaxSubs,
// MaxPayload), nats-server's max_connections, max_subscriptions and
// max_payload.
const (
	// DefaultMaxConns is half of the 20,000 files a process may open on
	// the machines discoverd is tuned for, leaving the rest to HTTP, Raft
	// and the stores. Many watchers share a connection, so this bounds
	// processes, not watches.
	DefaultMaxConns = 10000
	// DefaultMaxSubs bounds one connection's subscriptions: a watcher of
	// every event of 10,000 services fits on one connection; one that
	// wants more opens another.
	DefaultMaxSubs = 10000
	// DefaultMaxPayload is nats-server's own default, 1 MiB: every event of
	// an instance the API accepts fits in it (its meta is at most 64 KiB,
	// and under 400 KiB once escaped as JSON).
	DefaultMaxPayload = 1 << 20
)

// ServerConfig configures the embedded NATS server.
type ServerConfig struct {
	// Name is the server's name, shown in logs and monitoring; the node's
	// advertised address is a good choice.
	Name string
	// ClientAddr is the client port, host:port. A port of -1 or 0 picks a
	// free port (see Server.ClientURL). ClientAddrOff ("off") opens no client
	// port: the server then runs only for the daemon's in-process connection
	// and for its routes and leafnodes, if any. (With a ClusterAddr it keeps
	// a client listener on a random loopback port, never announced, since
	// nats-server starts routing only after its client listener.)
	ClientAddr string
	// ClusterAddr is the route listen address (host:port) of a voter, empty
	// for none. It must be set at start for SetRoutes to work later: the
	// server cannot turn clustering on at runtime.
	ClusterAddr string
	// Routes are the host:port of the other voters' cluster ports. Listing
	// this server's own address is harmless (the server ignores a route to
	// itself).
	Routes []string
	// LeafAddr is the leafnode listen address (host:port) on which proxies'
	// servers connect, empty for none.
	LeafAddr string
	// LeafRemotes are the host:port of voters' leafnode ports: this server is
	// a proxy's, and connects to one of them as a leafnode.
	LeafRemotes []string
	// MaxConns is the most client connections the server takes (routes
	// and leafnodes not included); 0 means DefaultMaxConns.
	MaxConns int
	// MaxSubs is the most subscriptions one connection may hold; 0 means
	// DefaultMaxSubs.
	MaxSubs int
	// MaxPayload is the largest message, in bytes, the server takes; a
	// client that publishes a larger one is refused and disconnected. 0
	// means DefaultMaxPayload.
	MaxPayload int
	// TLS, when set, puts TLS on the client port and mutual TLS on routes
	// and leafnodes.
	TLS *ServerTLS
	// Auth, when set, makes every token a NATS user and requires a user on
	// every client and leafnode connection (see natsUsers).
	Auth *ServerAuth
	// Trace turns on NATS protocol tracing (every protocol line, at zerolog
	// trace level). It has effect only if Log passes the trace level.
	Trace bool
	// Log receives the server's log lines.
	Log zerolog.Logger
}

// Server is a running embedded NATS server.
type Server struct {
	ns      *server.Server
	log     zerolog.Logger
	refused *limitRefusals

	// mu serializes option reloads and guards cfg.
	mu sync.Mutex
	// cfg is the configuration the server runs with, its addresses resolved
	// to the ports actually bound; reloads rebuild the options from it.
	cfg ServerConfig
}

// StartServer starts an embedded NATS server and returns once it accepts
// connections on every configured port.
func StartServer(cfg ServerConfig) (*Server, error) {
	cfg.Routes = slices.Clone(cfg.Routes)
	cfg.LeafRemotes = normalizeRemotes(cfg.LeafRemotes)
	opts, err := buildOptions(&cfg)
	if err != nil {
		return nil, err
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("bus: nats server: %w", err)
	}
	log := cfg.Log.With().Str("component", "nats").Logger()
	fatal := make(chan string, 1)
	refused := &limitRefusals{}
	ns.SetLogger(natsLogger{log: log, fatal: fatal, refused: refused}, opts.Debug, opts.Trace)
	ns.Start()
	if err := waitReady(ns, fatal); err != nil {
		ns.Shutdown()
		ns.WaitForShutdown()
		return nil, fmt.Errorf("bus: nats server %q (client %q, cluster %q, leaf %q): %w",
			cfg.Name, cfg.ClientAddr, cfg.ClusterAddr, cfg.LeafAddr, err)
	}
	s := &Server{ns: ns, log: log, refused: refused, cfg: cfg}
	// Record the ports actually bound, so that addresses reported to the
	// cluster are real and reloads rebuild identical listen options. The
	// server writes the random ports it bound back into opts (the same
	// pointer), before it reports ready.
	ropts := opts
	if cfg.ClientAddr != ClientAddrOff {
		if a, ok := ns.Addr().(*net.TCPAddr); ok {
			s.cfg.ClientAddr = net.JoinHostPort(ropts.Host, strconv.Itoa(a.Port))
		}
	}
	if cfg.ClusterAddr != "" {
		if a := ns.ClusterAddr(); a != nil {
			s.cfg.ClusterAddr = net.JoinHostPort(ropts.Cluster.Host, strconv.Itoa(a.Port))
		}
	}
	if cfg.LeafAddr != "" {
		s.cfg.LeafAddr = net.JoinHostPort(ropts.LeafNode.Host, strconv.Itoa(ropts.LeafNode.Port))
	}
	return s, nil
}

// waitReady waits until ns listens on every configured port, failing at once
// if the server reports a fatal error (such as a port in use).
func waitReady(ns *server.Server, fatal <-chan string) error {
	deadline := time.Now().Add(readyTimeout)
	for {
		if ns.ReadyForConnections(25 * time.Millisecond) {
			return nil
		}
		select {
		case msg := <-fatal:
			return errors.New(msg)
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not ready for connections within %v", readyTimeout)
		}
	}
}

// buildOptions is the one place where discoverd sets the embedded server's
// options. It is used at start and for every reload, so a reload changes
// exactly the fields that the configuration changed.
func buildOptions(cfg *ServerConfig) (*server.Options, error) {
	o := &server.Options{
		ServerName: cfg.Name,
		// The daemon handles signals; the embedded server must not.
		NoSigs: true,
		// The server never builds its own logger (not even on reload): it
		// logs through the zerolog bridge set by StartServer.
		NoLog: true,
		Debug: levelEnabled(cfg.Log, zerolog.DebugLevel),
		Trace: cfg.Trace && levelEnabled(cfg.Log, zerolog.TraceLevel),
		// No JetStream: core NATS only.
		JetStream: false,
		// No system account: no $SYS event traffic between servers.
		NoSystemAccount: true,

		MaxConn:       orDefault(cfg.MaxConns, DefaultMaxConns),
		MaxSubs:       orDefault(cfg.MaxSubs, DefaultMaxSubs),
		MaxPayload:    int32(orDefault(cfg.MaxPayload, DefaultMaxPayload)),
		MaxPending:    maxPending,
		WriteDeadline: clientWriteDeadline,
		WriteTimeout:  server.WriteTimeoutPolicyClose,
		// A subscriber that falls behind loses messages and then its
		// connection (slow consumer) instead of making publishers wait for
		// it: a slow event watcher must not slow heartbeats or the event
		// fan-out. The same holds for the daemon's own connection: past 48
		// MiB queued for it, the server drops heartbeats to it.
		NoFastProducerStall: true,
		PingInterval:        pingInterval,
		MaxPingsOut:         maxPingsOut,
	}

	if cfg.ClientAddr == ClientAddrOff {
		o.Host = "127.0.0.1"
		o.Port = server.RANDOM_PORT
		// nats-server (2.15) starts routing only once its client listener
		// is up, which never happens with DontListen (and Shutdown then
		// hangs): a clustered server keeps a client listener, on a random
		// loopback port that is never announced.
		o.DontListen = cfg.ClusterAddr == ""
	} else {
		host, port, err := splitListenAddr(cfg.ClientAddr, "client")
		if err != nil {
			return nil, err
		}
		o.Host, o.Port = host, port
	}

	if cfg.ClusterAddr != "" {
		host, port, err := splitListenAddr(cfg.ClusterAddr, "cluster")
		if err != nil {
			return nil, err
		}
		o.Cluster = server.ClusterOpts{
			Name:          ClusterName,
			Host:          host,
			Port:          port,
			PoolSize:      routePoolSize,
			Compression:   server.CompressionOpts{Mode: server.CompressionOff},
			PingInterval:  routePingInterval,
			MaxPingsOut:   routeMaxPingsOut,
			WriteDeadline: peerWriteDeadline,
		}
		routes, err := routeURLs(cfg.Routes)
		if err != nil {
			return nil, err
		}
		o.Routes = routes
	} else if len(cfg.Routes) > 0 {
		return nil, errors.New("bus: routes given without a cluster address")
	}

	o.LeafNode = server.LeafNodeOpts{
		WriteDeadline: peerWriteDeadline,
		Compression:   server.CompressionOpts{Mode: server.CompressionOff},
	}
	if cfg.LeafAddr != "" {
		host, port, err := splitListenAddr(cfg.LeafAddr, "leafnode")
		if err != nil {
			return nil, err
		}
		o.LeafNode.Host, o.LeafNode.Port = host, port
	}
	if t := cfg.TLS; t != nil {
		o.TLSConfig = t.Client
		o.TLSTimeout = tlsTimeout.Seconds()
		if cfg.ClusterAddr != "" {
			o.Cluster.TLSConfig = t.Peer
			o.Cluster.TLSTimeout = tlsTimeout.Seconds()
		}
		o.LeafNode.TLSConfig = t.Peer
		o.LeafNode.TLSTimeout = tlsTimeout.Seconds()
	}
	if cfg.Auth != nil {
		if cfg.Auth.NodePassword == "" {
			return nil, errors.New("bus: NATS auth needs a node password")
		}
		o.Users = natsUsers(cfg.Auth)
	}
	if len(cfg.LeafRemotes) > 0 {
		urls, err := hostPortURLs("nats-leaf", cfg.LeafRemotes, "leafnode remote")
		if err != nil {
			return nil, err
		}
		if cfg.Auth != nil {
			withNodeUser(urls, cfg.Auth.NodePassword)
		}
		// One remote with every voter's URL: the server connects to one of
		// them (in random order) and fails over to another. A remote per
		// voter would connect to all of them and deliver duplicates.
		remote := &server.RemoteLeafOpts{
			URLs:        urls,
			Compression: server.CompressionOpts{Mode: server.CompressionOff},
		}
		if cfg.TLS != nil {
			remote.TLS = true
			remote.TLSConfig = cfg.TLS.Peer
			remote.TLSTimeout = tlsTimeout.Seconds()
		}
		o.LeafNode.Remotes = []*server.RemoteLeafOpts{remote}
	}
	return o, nil
}

func orDefault(v, def int) int {
	if v <= 0 {
		return def
	}
	return v
}

// splitListenAddr parses a listen address; port 0 or -1 means a random port
// (nats-server's own 0 would mean its default port instead).
func splitListenAddr(addr, what string) (string, int, error) {
	host, ps, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, fmt.Errorf("bus: %s address %q: %w", what, addr, err)
	}
	port, err := strconv.Atoi(ps)
	if err != nil || port < -1 || port > 65535 {
		return "", 0, fmt.Errorf("bus: %s address %q: bad port %q", what, addr, ps)
	}
	if port == 0 {
		port = server.RANDOM_PORT
	}
	if host == "" {
		host = "0.0.0.0"
	}
	return host, port, nil
}

func routeURLs(routes []string) ([]*url.URL, error) {
	return hostPortURLs("nats-route", routes, "route")
}

func hostPortURLs(scheme string, addrs []string, what string) ([]*url.URL, error) {
	if len(addrs) == 0 {
		return nil, nil
	}
	urls := make([]*url.URL, 0, len(addrs))
	for _, a := range addrs {
		host, port, err := net.SplitHostPort(a)
		if err != nil {
			return nil, fmt.Errorf("bus: %s %q: %w", what, a, err)
		}
		if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 || host == "" {
			return nil, fmt.Errorf("bus: %s %q is not host:port", what, a)
		}
		urls = append(urls, &url.URL{Scheme: scheme, Host: net.JoinHostPort(host, port)})
	}
	return urls, nil
}

// normalizeRemotes sorts and deduplicates leaf remotes: the server names a
// remote after its URL list, so the same set in another order must not look
// like a change.
func normalizeRemotes(r []string) []string {
	if len(r) == 0 {
		return nil
	}
	r = slices.Clone(r)
	slices.Sort(r)
	return slices.Compact(r)
}

// Connect returns a connection to this server over an in-process pipe (no
// TCP). Options given are applied after the defaults (a connection name and
// unlimited reconnects, since the server is in the same process and a
// reconnect can only fail while it shuts down), so they may override them.
// The caller closes the connection before Shutdown.
func (s *Server) Connect(opts ...nats.Option) (*nats.Conn, error) {
	all := make([]nats.Option, 0, len(opts)+4)
	all = append(all,
		nats.Name("discoverd "+s.name()),
		nats.MaxReconnects(-1),
		nats.InProcessServer(s.ns),
	)
	s.mu.Lock()
	if a := s.cfg.Auth; a != nil {
		all = append(all, nats.UserInfo(NodeUser, a.NodePassword))
	}
	s.mu.Unlock()
	all = append(all, opts...)
	// The URL is required by nats.go but unused with an in-process server,
	// except for its scheme: nats://, as the in-process pipe needs no TLS
	// (the server's own URL is tls:// when its port speaks TLS).
	nc, err := nats.Connect("nats://127.0.0.1:4222", all...)
	if err != nil {
		return nil, fmt.Errorf("bus: in-process connection: %w", err)
	}
	return nc, nil
}

func (s *Server) name() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cfg.Name
}

// ClientURL is the nats:// URL of the client port, "" when it is off.
func (s *Server) ClientURL() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cfg.ClientAddr == ClientAddrOff {
		return ""
	}
	return "nats://" + s.cfg.ClientAddr
}

// ClientAddr is the client port's host:port as bound ("off" when off).
func (s *Server) ClientAddr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cfg.ClientAddr
}

// ClusterAddr is the route port's host:port as bound, "" if none.
func (s *Server) ClusterAddr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cfg.ClusterAddr
}

// LeafAddr is the leafnode port's host:port as bound, "" if none.
func (s *Server) LeafAddr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cfg.LeafAddr
}

// NumRoutes is the number of route connections to other servers (with a
// route pool, several per peer).
func (s *Server) NumRoutes() int { return s.ns.NumRoutes() }

// NumRemotes is the number of other servers this one has routes to.
func (s *Server) NumRemotes() int { return s.ns.NumRemotes() }

// NumLeafNodes is the number of leafnode connections, accepted or made.
func (s *Server) NumLeafNodes() int { return s.ns.NumLeafNodes() }

// SlowConsumers counts, since the server started, the times it found a
// connection too slow to take what it was sent, by kind of connection:
// clients (services, and the node's own in-process connection), routes to
// other voters, and leafnodes. The server counts a route once until it
// catches up again, a client or leafnode every time it falls behind.
func (s *Server) SlowConsumers() (clients, routes, leafnodes uint64) {
	return s.ns.NumSlowConsumersClients(), s.ns.NumSlowConsumersRoutes(), s.ns.NumSlowConsumersLeafs()
}

// LimitRefusals counts, since the server started, the clients it refused
// for its limits: connections past MaxConns, messages larger than
// MaxPayload (each closes its connection), and subscriptions past MaxSubs
// (nats-server reports these at most once every two seconds per account,
// so that count is a lower bound).
func (s *Server) LimitRefusals() (conns, payload, subs uint64) {
	return s.refused.conns.Load(), s.refused.payload.Load(), s.refused.subs.Load()
}

// SetRoutes replaces the routes to other voters' cluster ports at runtime:
// new routes are dialed, routes no longer listed are closed. It needs a
// ClusterAddr from the start.
func (s *Server) SetRoutes(routes []string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cfg.ClusterAddr == "" && len(routes) > 0 {
		return errors.New("bus: cannot set routes on a server started without a cluster address")
	}
	if slices.Equal(routes, s.cfg.Routes) {
		return nil
	}
	next := s.cfg
	next.Routes = slices.Clone(routes)
	if err := s.reload(&next); err != nil {
		return err
	}
	s.cfg = next
	return nil
}

// SetLeafRemotes replaces the voters' leafnode addresses this server
// connects to as a leafnode, at runtime; nil disconnects it.
//
// The set is one leafnode remote (the server connects to one of its URLs),
// and nats-server identifies a remote by its URL list, so a changed set is
// applied through its option reload as removing the old remote and, once
// the old connection is gone and the voters have had 250 ms to forget it,
// adding the new one: the leafnode connection is re-established, with a gap
// of about 300 ms for messages crossing it, and SetLeafRemotes returns after
// that wait. The same set in another order is no change. The client port
// and local traffic stay up throughout.
func (s *Server) SetLeafRemotes(remotes []string) error {
	remotes = normalizeRemotes(remotes)
	s.mu.Lock()
	defer s.mu.Unlock()
	if slices.Equal(remotes, s.cfg.LeafRemotes) {
		return nil
	}
	if len(s.cfg.LeafRemotes) > 0 && len(remotes) > 0 {
		// Switching: drop the old remote first, and connect the new one only
		// once the voters have dropped the old connection's interest. If the
		// new connection reached a voter that still sees, over a route, the
		// interest of the old one, nats-server would take it for a loop and
		// refuse it for 30 s.
		none := s.cfg
		none.LeafRemotes = nil
		if err := s.reload(&none); err != nil {
			return err
		}
		s.cfg = none
		s.waitNoSpokes(leafSwitchTimeout)
		time.Sleep(leafSwitchSettle)
	}
	next := s.cfg
	next.LeafRemotes = remotes
	if err := s.reload(&next); err != nil {
		return err
	}
	s.cfg = next
	return nil
}

// SetAuth replaces the NATS users (after the auth file was reloaded). The
// server closes the connections of users it no longer has, or whose
// password changed. Auth cannot be turned on or off at runtime.
func (s *Server) SetAuth(a *ServerAuth) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if (a == nil) != (s.cfg.Auth == nil) {
		return errors.New("bus: NATS auth cannot be turned on or off while the server runs")
	}
	next := s.cfg
	next.Auth = a
	if err := s.reload(&next); err != nil {
		return err
	}
	s.cfg = next
	return nil
}

// waitNoSpokes waits until this server has no leafnode connection that it
// made (a spoke), at most timeout.
func (s *Server) waitNoSpokes(timeout time.Duration) {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		lz, err := s.ns.Leafz(nil)
		if err != nil {
			return
		}
		spokes := 0
		for _, l := range lz.Leafs {
			if l.IsSpoke {
				spokes++
			}
		}
		if spokes == 0 {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// reload applies cfg through nats-server's option reload. s.mu is held.
func (s *Server) reload(cfg *ServerConfig) error {
	opts, err := buildOptions(cfg)
	if err != nil {
		return err
	}
	if err := s.ns.ReloadOptions(opts); err != nil {
		return fmt.Errorf("bus: nats server reload: %w", err)
	}
	return nil
}

// Shutdown stops the server, closing every connection, and waits until
// all of its goroutines are done.
func (s *Server) Shutdown() {
	s.ns.Shutdown()
	s.ns.WaitForShutdown()
}
