package client

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/discoverd/discoverd/api"
)

// Environment variables New reads for a secured cluster; options given to
// NewWithOptions win over them.
const (
	// TokenEnv holds the token's secret (WithToken).
	TokenEnv = "DISCOVERD_TOKEN"
	// CAEnv names a PEM file of the cluster's CA (WithCAFile).
	CAEnv = "DISCOVERD_CA"
)

// security is what a client presents to a secured cluster.
type security struct {
	token  string
	tls    *tls.Config
	caFile string
	// err is a CA file that could not be loaded: every call fails with it.
	err error
}

// WithToken sends secret as the bearer token of every HTTP request and as
// the NATS token (environment: DISCOVERD_TOKEN).
func WithToken(secret string) Option {
	return func(c *Client) { c.sec.token = strings.TrimSpace(secret) }
}

// WithTLSConfig speaks HTTPS and NATS over TLS with cfg. Servers given as
// host:port are then reached over https.
func WithTLSConfig(cfg *tls.Config) Option {
	return func(c *Client) { c.sec.tls, c.sec.caFile = cfg, "" }
}

// WithCAFile speaks HTTPS and NATS over TLS, verifying servers against the
// PEM CA in path, the cluster's (environment: DISCOVERD_CA).
func WithCAFile(path string) Option {
	return func(c *Client) { c.sec.caFile, c.sec.tls = path, nil }
}

func (c *Client) securityFromEnv() {
	if v := os.Getenv(TokenEnv); v != "" {
		c.sec.token = strings.TrimSpace(v)
	}
	if v := os.Getenv(CAEnv); v != "" {
		c.sec.caFile = v
	}
}

// setupTLS loads the CA file, if one was given.
func (c *Client) setupTLS() {
	if c.sec.caFile == "" {
		return
	}
	b, err := os.ReadFile(c.sec.caFile)
	pool := x509.NewCertPool()
	if err == nil && !pool.AppendCertsFromPEM(b) {
		err = fmt.Errorf("%s holds no PEM certificate", c.sec.caFile)
	}
	if err != nil {
		c.sec.err = &api.Error{Code: api.CodeValidation, Message: fmt.Sprintf("loading the CA file: %v", err)}
		return
	}
	c.sec.tls = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
}

// normalizeServer is NormalizeServer, with https for a bare host:port when
// the client speaks TLS.
func (c *Client) normalizeServer(s string) string {
	s = strings.TrimSpace(s)
	if c.sec.tls != nil {
		if !strings.Contains(s, "://") {
			s = "https://" + s
		} else if rest, ok := strings.CutPrefix(s, "http://"); ok {
			s = "https://" + rest
		}
	}
	return NormalizeServer(s)
}

// tlsError is a failed TLS verification of server as a final error: another
// try would fail the same way.
func tlsError(server string, err error) *api.Error {
	var ve *tls.CertificateVerificationError
	var he x509.HostnameError
	var ue x509.UnknownAuthorityError
	if errors.As(err, &ve) || errors.As(err, &he) || errors.As(err, &ue) {
		return &api.Error{Code: api.CodeUnavailable, Message: fmt.Sprintf("cannot verify the TLS certificate of %s (is the cluster's CA given with WithCAFile or %s?): %v", server, CAEnv, unwrapURLError(err))}
	}
	return nil
}
