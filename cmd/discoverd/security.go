package main

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/signal"
	"syscall"

	"github.com/rs/zerolog"

	"github.com/discoverd/discoverd/auth"
	"github.com/discoverd/discoverd/bus"
	"github.com/discoverd/discoverd/httpapi"
	"github.com/discoverd/discoverd/node"
	"github.com/discoverd/discoverd/pki"
)

// security is the daemon's tokens and certificates, reloaded on SIGHUP.
type security struct {
	auth *auth.Store
	// tls holds the node's certificate and CA, nil with TLS off.
	tls *pki.Reloader
	log zerolog.Logger
	// nodePassword is the NATS password of the nodes' own user, fixed at
	// start so that every node of a cluster started from the same files
	// agrees on it.
	nodePassword string
}

// setupSecurity loads the auth file and checks the flags against each
// other: secrets never cross a network in clear text, and a node open to the
// network without tokens says so once at start.
func setupSecurity(o *options, log zerolog.Logger) (*security, error) {
	s := &security{log: log}
	loopback := isLoopback(o.addr)
	if o.tlsCert != "" || o.tlsKey != "" || o.tlsCA != "" {
		if o.tlsCert == "" || o.tlsKey == "" || o.tlsCA == "" {
			return nil, fmt.Errorf("TLS needs all of --tls-cert, --tls-key and --tls-ca (the CA that every node's certificate comes from)")
		}
		rel, err := pki.Load(pki.Files{Cert: o.tlsCert, Key: o.tlsKey, CA: o.tlsCA})
		if err != nil {
			return nil, err
		}
		s.tls = rel
		log.Info().Str("cert", o.tlsCert).Str("ca", o.tlsCA).Msg("TLS on: HTTPS and NATS over TLS, mutual TLS between nodes")
	}
	if o.authFile != "" {
		if !loopback && !o.tlsOn() {
			return nil, fmt.Errorf("--auth-file on --addr %s (not loopback) needs TLS: set --tls-cert and --tls-key, so that secrets never cross the network in clear text", o.addr)
		}
		store, err := auth.Open(o.authFile, log)
		if err != nil {
			return nil, fmt.Errorf("--auth-file: %w", err)
		}
		s.auth = store
		if s.tls == nil && store.Current().FirstAdmin() == nil && o.clustered() {
			// Without TLS, nodes present the first admin token to each other:
			// with none, every forwarded write and relayed read would be
			// refused, and the cluster would look up but answer nothing.
			return nil, fmt.Errorf("--auth-file %s has no admin token, and without TLS the nodes of a cluster (--peers) authenticate to each other with its first admin token: add one, or turn TLS on", o.authFile)
		}
		s.nodePassword = s.peerToken()
		if s.tls != nil {
			// Routes and leafnodes need a certificate from the CA: the
			// password only has to be the same on every node of the cluster.
			ca, _ := os.ReadFile(o.tlsCA)
			sum := sha256.Sum256(ca)
			s.nodePassword = "ca-" + hex.EncodeToString(sum[:])
		}
		if s.nodePassword == "" {
			// No admin token: only this node's own connection logs in as a
			// node (proxies' leafnodes need TLS or an admin token).
			s.nodePassword = randomSecret()
		}
		log.Info().Str("auth_file", o.authFile).Int("tokens", len(store.Current().Tokens())).Msg("auth on")
	} else if !loopback {
		log.Warn().Str("addr", o.addr).Msg("no --auth-file on an address that is not loopback: anyone who can reach this node can change the registry")
	}
	return s, nil
}

// clustered reports whether this node has other nodes to talk to: --peers
// names a node other than this one (a proxy is not in it at all).
func (o *options) clustered() bool {
	self := o.advertise
	if self == "" {
		self = o.addr
	}
	for _, p := range o.peerList() {
		if p != self {
			return true
		}
	}
	return false
}

// peerToken is the secret nodes present to each other when auth is on
// without TLS (possible on loopback only): the auth file's first admin token.
// With TLS, nodes are known by their certificates instead.
func (s *security) peerToken() string {
	if s.auth == nil || s.tls != nil {
		return ""
	}
	if t := s.auth.Current().FirstAdmin(); t != nil {
		return t.Secret
	}
	return ""
}

// natsAuth is the NATS side of the tokens in force, nil with auth off.
func (s *security) natsAuth() *bus.ServerAuth {
	if s.auth == nil {
		return nil
	}
	return &bus.ServerAuth{Tokens: s.auth.Current().Tokens(), NodePassword: s.nodePassword}
}

// watchNATS keeps n's NATS users in step with the auth file.
func (s *security) watchNATS(n *node.Node) {
	if s.auth == nil {
		return
	}
	s.auth.OnReload(func(*auth.Set) {
		if err := n.SetNATSAuth(s.natsAuth()); err != nil {
			s.log.Error().Err(err).Msg("NATS users not reloaded")
		}
	})
}

func randomSecret() string {
	b := make([]byte, 32)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// reloadOnHUP reloads the auth file and the certificates on each SIGHUP
// until stop is closed. A file that does not load is refused (and logged)
// and what was in force stays.
func (s *security) reloadOnHUP(stop <-chan struct{}) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	go func() {
		defer signal.Stop(hup)
		for {
			select {
			case <-stop:
				return
			case <-hup:
				s.log.Info().Msg("SIGHUP: reloading")
				s.reload()
			}
		}
	}()
}

func (s *security) reload() {
	if s.tls != nil {
		if err := s.tls.Reload(); err != nil {
			s.log.Error().Err(err).Msg("certificates refused; the ones in force are kept")
		} else {
			s.log.Info().Msg("certificates reloaded")
		}
	}
	if s.auth != nil {
		_ = s.auth.Reload()
	}
}

// nodeTLS fills the TLS fields of a node's config and of its HTTP API.
func (s *security) nodeTLS(cfg *node.Config, opts *httpapi.Options) {
	if s.tls == nil {
		return
	}
	cfg.TLS = s.tls.ServerConfig([]string{"h2", "http/1.1", node.RaftALPN})
	cfg.PeerTLS = s.tls.ClientConfig(nil)
	cfg.NATSTLS = &bus.ServerTLS{Client: s.tls.StaticServerConfig(false), Peer: s.tls.StaticServerConfig(true)}
	opts.PeerTLS = cfg.PeerTLS
}

// isLoopback reports whether a listen address is on loopback only
// ("localhost" or a loopback IP; an empty host listens everywhere).
func isLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// tlsOn reports whether the node serves TLS.
func (o *options) tlsOn() bool { return o.tlsCert != "" && o.tlsKey != "" }
