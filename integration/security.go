package integration

import (
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"os"
	"testing"

	"github.com/rs/zerolog"

	"github.com/discoverd/discoverd/auth"
	"github.com/discoverd/discoverd/bus"
	"github.com/discoverd/discoverd/node"
	"github.com/discoverd/discoverd/pki"
)

// Secrets of the tokens every secure cluster has.
const (
	AdminSecret   = "secret-admin"
	ReadSecret    = "secret-read"
	ServiceSecret = "secret-web" // service token for "web" and "web-*"
)

// SecureAuthFile is the auth file of a secure cluster.
const SecureAuthFile = `{"tokens": [
  {"name": "ops",  "secret": "` + AdminSecret + `", "role": "admin"},
  {"name": "web",  "secret": "` + ServiceSecret + `", "role": "service", "services": ["web", "web-*"]},
  {"name": "dash", "secret": "` + ReadSecret + `", "role": "read"}
]}`

// Security is a cluster's CA, node certificate and tokens.
type Security struct {
	// Dir holds the CA (pki.CAFile), and node.pem / node-key.pem.
	Dir  string
	TLS  *pki.Reloader
	Auth *auth.Store
	// ClientTLS trusts the cluster's CA and presents no certificate.
	ClientTLS *tls.Config
}

// NewSecurity makes a CA and a certificate for 127.0.0.1 in a temporary
// folder, and the tokens of SecureAuthFile.
func NewSecurity(t testing.TB) *Security {
	t.Helper()
	dir := t.TempDir()
	if _, _, err := pki.CreateCA(dir); err != nil {
		t.Fatal(err)
	}
	cert, key, err := pki.CreateCert(dir, "node", []string{"127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	rel, err := pki.Load(pki.Files{Cert: cert, Key: key, CA: dir + "/" + pki.CAFile})
	if err != nil {
		t.Fatal(err)
	}
	set, err := auth.Parse([]byte(SecureAuthFile))
	if err != nil {
		t.Fatal(err)
	}
	return &Security{Dir: dir, TLS: rel, Auth: auth.NewStore(set, zerolog.Nop()),
		ClientTLS: &tls.Config{RootCAs: rel.Pool(), MinVersion: tls.VersionTLS12}}
}

// apply sets a node's TLS and NATS auth as cmd/discoverd does.
func (s *Security) apply(cfg *node.Config) {
	cfg.TLS = s.TLS.ServerConfig([]string{"h2", "http/1.1", node.RaftALPN})
	cfg.PeerTLS = s.TLS.ClientConfig(nil)
	cfg.NATSTLS = &bus.ServerTLS{Client: s.TLS.StaticServerConfig(false), Peer: s.TLS.StaticServerConfig(true)}
	ca, _ := os.ReadFile(s.Dir + "/" + pki.CAFile)
	sum := sha256.Sum256(ca)
	cfg.NATSAuth = &bus.ServerAuth{Tokens: s.Auth.Current().Tokens(), NodePassword: "ca-" + hex.EncodeToString(sum[:])}
}

// WithSecurity runs the cluster with TLS on every port, mutual TLS between
// nodes, and the tokens of s.
func WithSecurity(s *Security) Option {
	return func(c *Cluster) { c.sec = s }
}

// defaultOptions apply to every NewCluster before its own options; the
// suite over mutual TLS sets them.
var defaultOptions []Option
