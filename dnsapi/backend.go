package dnsapi

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"time"

	"github.com/discoverd/discoverd/api"
)

// Backend is what DNS needs of a node (*node.Node implements it). Both
// methods read local state: a DNS answer never waits for Raft. An unknown
// service is an api.Error with code object_not_found.
type Backend interface {
	// AppendInstances appends a service's live instances to dst, so that
	// the server reuses one buffer per query.
	AppendInstances(dst []*api.Instance, service string) ([]*api.Instance, error)
	// Leader returns a service's leader, nil when it has none.
	Leader(service string) (*api.Instance, error)
}

// ByRole reads from local while isProxy reports false and from remote while
// it reports true, so a node can be promoted or demoted while its DNS server
// runs.
func ByRole(isProxy func() bool, local, remote Backend) Backend {
	return byRole{isProxy, local, remote}
}

type byRole struct {
	isProxy       func() bool
	local, remote Backend
}

func (b byRole) pick() Backend {
	if b.isProxy() {
		return b.remote
	}
	return b.local
}

func (b byRole) AppendInstances(dst []*api.Instance, service string) ([]*api.Instance, error) {
	return b.pick().AppendInstances(dst, service)
}

func (b byRole) Leader(service string) (*api.Instance, error) { return b.pick().Leader(service) }

// ThroughVoters is the Backend of a proxy: it reads a voter's local state
// over the HTTP API (voters lists them, the leader first when known), trying
// the next voter when one cannot be reached. Each lookup is one HTTP request
// that the voter answers from its own state, without Raft.
//
// The proxy reads as a node of the cluster: with peer.TLS its certificate
// (over https), else peer.Token when auth is on, and the node-to-node
// marker header either way, as its other requests to voters carry.
func ThroughVoters(voters func() []string, peer PeerAuth) Backend {
	tr := &http.Transport{
		DialContext:         (&net.Dialer{Timeout: time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConnsPerHost: 64,
		IdleConnTimeout:     time.Minute,
	}
	scheme := "http://"
	if peer.TLS != nil {
		tr.TLSClientConfig = peer.TLS.Clone()
		scheme = "https://"
	}
	return &throughVoters{
		voters: voters,
		scheme: scheme,
		token:  peer.Token,
		http:   &http.Client{Timeout: 2 * time.Second, Transport: tr},
	}
}

// PeerAuth is how a proxy's DNS reads present themselves to voters: the
// node's client side of mutual TLS, and the token nodes show each other
// when auth is on without TLS. The zero value is an open cluster's.
type PeerAuth struct {
	TLS   *tls.Config
	Token func() string
}

type throughVoters struct {
	voters func() []string
	scheme string
	token  func() string
	http   *http.Client
}

// errNoVoter is a lookup that no voter answered: the server answers
// SERVFAIL, and the client tries again.
var errNoVoter = errors.New("no voter answered")

// get reads path from the first voter that answers and decodes it into out.
// It reports false (and no error) for a 404.
func (t *throughVoters) get(path string, out any) (bool, error) {
	lastErr := errNoVoter
	for _, addr := range t.voters() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		req, err := http.NewRequestWithContext(ctx, "GET", t.scheme+addr+path, nil)
		if err != nil {
			cancel()
			return false, err
		}
		req.Header.Set(api.ForwardedHeader, "1")
		if t.token != nil {
			if tok := t.token(); tok != "" {
				req.Header.Set("Authorization", "Bearer "+tok)
			}
		}
		resp, err := t.http.Do(req)
		if err != nil {
			cancel()
			lastErr = err
			continue
		}
		ok, err := decodeAnswer(resp, out)
		cancel()
		if err != nil {
			lastErr = err
			continue
		}
		return ok, nil
	}
	return false, lastErr
}

func decodeAnswer(resp *http.Response, out any) (bool, error) {
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
		return true, json.NewDecoder(io.LimitReader(resp.Body, 64<<20)).Decode(out)
	case http.StatusNotFound:
		io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		return false, nil
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	return false, fmt.Errorf("%s answered %s", resp.Request.URL.Host, resp.Status)
}

func servicePath(service string) string { return "/services/" + url.PathEscape(service) }

func notFound(service string) error {
	return api.Errorf(api.CodeNotFound, "service %q does not exist", service)
}

func (t *throughVoters) AppendInstances(dst []*api.Instance, service string) ([]*api.Instance, error) {
	var list []*api.Instance
	ok, err := t.get(servicePath(service)+"/instances", &list)
	if err != nil {
		return dst, err
	}
	if !ok {
		return dst, notFound(service)
	}
	return append(dst, list...), nil
}

func (t *throughVoters) Leader(service string) (*api.Instance, error) {
	var inst api.Instance
	ok, err := t.get(servicePath(service)+"/leader", &inst)
	if err != nil || ok {
		if err != nil {
			return nil, err
		}
		return &inst, nil
	}
	// No leader, or no service: the instances (404 only for an unknown
	// service) say which.
	if _, err := t.AppendInstances(nil, service); err != nil {
		return nil, err
	}
	return nil, nil
}
