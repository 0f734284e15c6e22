package pki

import (
	"crypto/tls"
	"net"
	"path/filepath"
	"testing"
	"time"
)

// newCA makes a CA in a new folder and returns the folder.
func newCA(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if _, _, err := CreateCA(dir); err != nil {
		t.Fatal(err)
	}
	return dir
}

// node makes a certificate of the CA in dir for name, valid for the host
// names given, and loads it.
func node(t *testing.T, dir, name string, hosts ...string) *Reloader {
	t.Helper()
	cert, key, err := CreateCert(dir, name, hosts)
	if err != nil {
		t.Fatal(err)
	}
	r, err := Load(Files{Cert: cert, Key: key, CA: filepath.Join(dir, "discoverd-ca.pem")})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// handshake runs a TLS handshake between a dialing and an accepting node,
// the dialer naming the accepting node serverName, as nats-server does
// with the host of the route URL it dials.
func handshake(t *testing.T, dialer, acceptor *tls.Config, serverName string) (dialErr, acceptErr error) {
	t.Helper()
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	a.SetDeadline(time.Now().Add(10 * time.Second))
	b.SetDeadline(time.Now().Add(10 * time.Second))
	dc := dialer.Clone()
	dc.ServerName = serverName
	done := make(chan error, 1)
	go func() { done <- tls.Server(b, acceptor).Handshake() }()
	dialErr = tls.Client(a, dc).Handshake()
	if dialErr != nil {
		a.Close()
	}
	acceptErr = <-done
	return dialErr, acceptErr
}

// TestPeerLinksCheckTheCAAndNotTheAddress: NATS routes are dialed at the
// IP addresses other servers gossip, which node certificates made for host
// names do not hold. A certificate of the cluster's CA is accepted whatever
// the address; one of another CA is refused both ways.
func TestPeerLinksCheckTheCAAndNotTheAddress(t *testing.T) {
	dir, other := newCA(t), newCA(t)
	voter1 := node(t, dir, "voter1", "voter1.cluster")
	voter2 := node(t, dir, "voter2", "voter2.cluster")
	stranger := node(t, other, "stranger", "voter3.cluster")

	cases := []struct {
		name           string
		dialer, accept *Reloader
		serverName     string
		ok             bool
	}{
		{"same CA, dialed by host name", voter1, voter2, "voter2.cluster", true},
		{"same CA, dialed by an IP the certificate lacks", voter1, voter2, "172.27.0.4", true},
		{"a stranger dials a node", stranger, voter2, "voter2.cluster", false},
		{"a node dials a stranger", voter1, stranger, "voter3.cluster", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dialErr, acceptErr := handshake(t, tc.dialer.StaticServerConfig(true), tc.accept.StaticServerConfig(true), tc.serverName)
			if tc.ok && (dialErr != nil || acceptErr != nil) {
				t.Fatalf("refused: dialing side %v, accepting side %v", dialErr, acceptErr)
			}
			if !tc.ok && dialErr == nil && acceptErr == nil {
				t.Fatal("a certificate of another CA was accepted")
			}
		})
	}
}

// TestClientsCheckTheServerName: an API client (and a node's HTTP client)
// still checks the name it dialed.
func TestClientsCheckTheServerName(t *testing.T) {
	dir := newCA(t)
	voter1 := node(t, dir, "voter1", "voter1.cluster")
	voter2 := node(t, dir, "voter2", "voter2.cluster")
	if dialErr, _ := handshake(t, voter1.ClientConfig(nil), voter2.ServerConfig(nil), "voter2.cluster"); dialErr != nil {
		t.Fatalf("dialing voter2 by its name: %v", dialErr)
	}
	if dialErr, _ := handshake(t, voter1.ClientConfig(nil), voter2.ServerConfig(nil), "voter9.cluster"); dialErr == nil {
		t.Fatal("a server was accepted under a name its certificate does not hold")
	}
}
