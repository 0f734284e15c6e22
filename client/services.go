package client

import (
	"context"
	"net/url"

	"github.com/discoverd/discoverd/api"
)

func servicePath(service string) string { return "/services/" + url.PathEscape(service) }

func (c *Client) readQuery() string {
	if c.consistent {
		return "consistent=true"
	}
	return ""
}

// AddService creates a service. cfg may be nil for the defaults (leader
// type oldest). It fails with object_exists if the service exists.
func (c *Client) AddService(ctx context.Context, service string, cfg *api.ServiceConfig) error {
	if err := api.ValidateServiceName(service); err != nil {
		return err
	}
	if cfg == nil {
		cfg = &api.ServiceConfig{}
	}
	if cfg.LeaderType != "" {
		if err := api.ValidateLeaderType(cfg.LeaderType); err != nil {
			return err
		}
	}
	body, err := jsonBody(cfg)
	if err != nil {
		return err
	}
	_, err = c.do(ctx, retryOpts{}, &request{method: "PUT", path: servicePath(service), body: body}, nil)
	return err
}

// RemoveService removes a service with its instances, meta and leader.
func (c *Client) RemoveService(ctx context.Context, service string) error {
	if err := api.ValidateServiceName(service); err != nil {
		return err
	}
	_, err := c.do(ctx, retryOpts{}, &request{method: "DELETE", path: servicePath(service)}, nil)
	return err
}

// Services lists the names of the services.
func (c *Client) Services(ctx context.Context) ([]string, error) {
	var out []string
	if _, err := c.do(ctx, retryOpts{}, &request{method: "GET", path: "/services", query: c.readQuery()}, &out); err != nil {
		return nil, err
	}
	if out == nil {
		out = []string{}
	}
	return out, nil
}

// Instances lists a service's live instances in order of index (oldest
// first). A service with no instances gives an empty list; an unknown one
// an object_not_found error.
func (c *Client) Instances(ctx context.Context, service string) ([]*api.Instance, error) {
	if err := api.ValidateServiceName(service); err != nil {
		return nil, err
	}
	var out []*api.Instance
	r := &request{method: "GET", path: servicePath(service) + "/instances", query: c.readQuery()}
	if _, err := c.do(ctx, retryOpts{}, r, &out); err != nil {
		return nil, err
	}
	if out == nil {
		out = []*api.Instance{}
	}
	return out, nil
}

// Leader returns the leader of a service; its Index is its fencing token
// (a higher index is a newer leadership).
//
// A service that exists but has no leader gives (nil, nil); an unknown
// service gives an object_not_found error. (The server answers 404 for both;
// on a 404 the client tells them apart by reading the service's instances,
// which are 404 only for an unknown service.)
func (c *Client) Leader(ctx context.Context, service string) (*api.Instance, error) {
	if err := api.ValidateServiceName(service); err != nil {
		return nil, err
	}
	var out api.Instance
	r := &request{method: "GET", path: servicePath(service) + "/leader", query: c.readQuery()}
	_, err := c.do(ctx, retryOpts{}, r, &out)
	if err == nil {
		return &out, nil
	}
	if !IsNotFound(err) {
		return nil, err
	}
	// No leader, or no service: the instances say which. (A leader stream
	// cannot tell: it opens on a service not created yet.)
	ir := &request{method: "GET", path: servicePath(service) + "/instances", query: c.readQuery()}
	if _, err := c.do(ctx, retryOpts{}, ir, nil); err != nil {
		return nil, err
	}
	return nil, nil
}

// SetLeader makes instance id the leader of a service whose leader type is
// manual.
func (c *Client) SetLeader(ctx context.Context, service, id string) error {
	if err := api.ValidateServiceName(service); err != nil {
		return err
	}
	if err := api.ValidateInstanceID(id); err != nil {
		return err
	}
	body, err := jsonBody(api.SetLeaderRequest{ID: id})
	if err != nil {
		return err
	}
	_, err = c.do(ctx, retryOpts{}, &request{method: "PUT", path: servicePath(service) + "/leader", body: body}, nil)
	return err
}

// GetMeta returns a service's meta with its index. A service with no meta,
// like an unknown service, gives an object_not_found error.
func (c *Client) GetMeta(ctx context.Context, service string) (*api.ServiceMeta, error) {
	if err := api.ValidateServiceName(service); err != nil {
		return nil, err
	}
	var out api.ServiceMeta
	r := &request{method: "GET", path: servicePath(service) + "/meta", query: c.readQuery()}
	if _, err := c.do(ctx, retryOpts{}, r, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// SetMeta writes a service's meta if meta.Index is the index of the current
// meta (0 to create it), and returns the new meta with its new index. A lost
// compare-and-set fails with precondition_failed (or object_exists when
// creating meta that exists).
//
// A write retried after a connection error may have been applied by the
// first attempt: the retry then fails the compare-and-set.
func (c *Client) SetMeta(ctx context.Context, service string, meta *api.ServiceMeta) (*api.ServiceMeta, error) {
	if err := api.ValidateServiceName(service); err != nil {
		return nil, err
	}
	if meta == nil || len(meta.Data) == 0 {
		return nil, api.Errorf(api.CodeValidation, "service meta has no data")
	}
	body, err := jsonBody(meta)
	if err != nil {
		return nil, err
	}
	var out api.ServiceMeta
	if _, err := c.do(ctx, retryOpts{}, &request{method: "PUT", path: servicePath(service) + "/meta", body: body}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Status returns the status of the first server that answers.
func (c *Client) Status(ctx context.Context) (*api.Status, error) {
	var out api.Status
	if _, err := c.do(ctx, retryOpts{}, &request{method: "GET", path: "/.well-known/status"}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Peers lists the Raft voters (GET /raft/peers, a list of their addresses),
// marking the one GET /raft/leader names. The leader is best effort: without
// one known, every peer is listed as not leading. A server without the
// cluster routes answers object_not_found.
func (c *Client) Peers(ctx context.Context) ([]api.Peer, error) {
	var addrs []string
	if _, err := c.do(ctx, retryOpts{}, &request{method: "GET", path: "/raft/peers"}, &addrs); err != nil {
		return nil, err
	}
	peers := make([]api.Peer, 0, len(addrs))
	if len(addrs) == 0 {
		// No voter, no leader to ask: the question would only wait out
		// the retries of a service_unavailable.
		return peers, nil
	}
	leader, _ := c.RaftLeader(ctx)
	for _, a := range addrs {
		peers = append(peers, api.Peer{Addr: a, Leader: a == leader})
	}
	return peers, nil
}

// RaftLeader returns the advertised address of the Raft leader (GET
// /raft/leader).
func (c *Client) RaftLeader(ctx context.Context) (string, error) {
	var out api.LeaderInfo
	if _, err := c.do(ctx, retryOpts{}, &request{method: "GET", path: "/raft/leader"}, &out); err != nil {
		return "", err
	}
	return out.Host, nil
}

// Ping checks that a server answers.
func (c *Client) Ping(ctx context.Context) error {
	_, err := c.do(ctx, retryOpts{}, &request{method: "GET", path: "/ping"}, nil)
	return err
}
