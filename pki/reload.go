package pki

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"sync/atomic"
)

// Files names a node's PEM files.
type Files struct {
	Cert, Key, CA string
}

// Reloader holds a node's certificate and CA, swapped atomically by Reload.
// The configs it returns read them at each handshake.
type Reloader struct {
	files Files
	cert  atomic.Pointer[tls.Certificate]
	pool  atomic.Pointer[x509.CertPool]
}

// Load reads the files. CA may be empty only if no peer is ever verified.
func Load(f Files) (*Reloader, error) {
	r := &Reloader{files: f}
	if err := r.Reload(); err != nil {
		return nil, err
	}
	return r, nil
}

// Reload reads the files again; on any error the ones in force stay.
func (r *Reloader) Reload() error {
	cert, err := tls.LoadX509KeyPair(r.files.Cert, r.files.Key)
	if err != nil {
		return fmt.Errorf("loading --tls-cert %s and --tls-key %s: %w", r.files.Cert, r.files.Key, err)
	}
	var pool *x509.CertPool
	if r.files.CA != "" {
		pool, err = LoadPool(r.files.CA)
		if err != nil {
			return err
		}
	}
	r.cert.Store(&cert)
	r.pool.Store(pool)
	return nil
}

// LoadPool reads a PEM file of CA certificates.
func LoadPool(path string) (*x509.CertPool, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading CA %s: %w", path, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("CA %s holds no PEM certificate", path)
	}
	return pool, nil
}

// Pool is the CA in force (nil without one).
func (r *Reloader) Pool() *x509.CertPool { return r.pool.Load() }

// ServerConfig serves the node's certificate and verifies the certificates
// clients present against the CA (a client may present none: it is then a
// client, not a node). nextProtos are offered for ALPN.
func (r *Reloader) ServerConfig(nextProtos []string) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		NextProtos: nextProtos,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			c := &tls.Config{
				MinVersion:   tls.VersionTLS12,
				NextProtos:   nextProtos,
				Certificates: []tls.Certificate{*r.cert.Load()},
			}
			if pool := r.pool.Load(); pool != nil {
				c.ClientAuth = tls.VerifyClientCertIfGiven
				c.ClientCAs = pool
			}
			return c, nil
		},
	}
}

// StaticServerConfig is a server config for servers that read their config
// fields themselves (the embedded NATS server): the certificate still comes
// from the Reloader at each handshake, the CA is the one in force now.
// requireClientCert makes it mutual TLS.
func (r *Reloader) StaticServerConfig(requireClientCert bool) *tls.Config {
	c := &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return r.cert.Load(), nil
		},
		ClientCAs: r.pool.Load(),
	}
	if requireClientCert {
		c.ClientAuth = tls.RequireAndVerifyClientCert
		// NATS routes and leafnodes dial with the same config they accept
		// with: present the certificate and verify the server too.
		c.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return r.cert.Load(), nil }
		// The dialing side checks the chain against the CA but not the
		// name: nats-server dials the routes other servers gossip by their
		// IP addresses, which node certificates (made for the nodes' host
		// names) need not hold. Both ends of a route or leafnode present a
		// certificate of the cluster's own CA, and that is what makes a
		// node. The accepting side has verified the client's chain already
		// (RequireAndVerifyClientCert) and has it in VerifiedChains.
		c.InsecureSkipVerify = true
		c.VerifyConnection = func(cs tls.ConnectionState) error {
			if len(cs.VerifiedChains) > 0 {
				return nil
			}
			return VerifyPeer(cs, r.pool.Load())
		}
	}
	return c
}

// ClientConfig presents the node's certificate and verifies the server
// against the CA in force.
func (r *Reloader) ClientConfig(nextProtos []string) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		NextProtos: nextProtos,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return r.cert.Load(), nil
		},
		// Verified in VerifyConnection against the CA in force, so a reloaded
		// CA applies to the next connection.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			return VerifyServer(cs, r.pool.Load())
		},
	}
}

// VerifyPeer checks that the other node's chain comes from pool, whatever
// address it was reached at.
func VerifyPeer(cs tls.ConnectionState, pool *x509.CertPool) error {
	return verifyChain(cs, pool, "")
}

// VerifyServer checks a server's chain and name against pool.
func VerifyServer(cs tls.ConnectionState, pool *x509.CertPool) error {
	return verifyChain(cs, pool, cs.ServerName)
}

// verifyChain checks the peer's chain against pool, and its name unless
// name is empty.
func verifyChain(cs tls.ConnectionState, pool *x509.CertPool, name string) error {
	if pool == nil {
		return errors.New("no CA to verify the peer with")
	}
	if len(cs.PeerCertificates) == 0 {
		return errors.New("the peer presented no certificate")
	}
	inter := x509.NewCertPool()
	for _, c := range cs.PeerCertificates[1:] {
		inter.AddCert(c)
	}
	_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{
		Roots:         pool,
		Intermediates: inter,
		DNSName:       name,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
	return err
}
