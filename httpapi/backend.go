package httpapi

import (
	"context"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/discoverd/discoverd/api"
)

// Backend is what the HTTP API needs of a node (*node.Node implements it).
// Each route calls one method, the same one the NATS transport calls, so both
// transports share one code path. Errors are *api.Error values where the
// caller can act on them; anything else is answered as unknown_error.
type Backend interface {
	// Writes. On a follower they are forwarded to the Raft leader; with no
	// leader reachable they fail with service_unavailable.
	AddService(ctx context.Context, name string, cfg api.ServiceConfig) (index uint64, err error)
	RemoveService(ctx context.Context, name string) (index uint64, err error)
	// Heartbeat registers inst (already validated, id filled in) if it is new
	// or changed, and otherwise only refreshes its heartbeat time. It returns
	// the stored instance, with its index.
	Heartbeat(ctx context.Context, service string, inst *api.Instance) (*api.Instance, error)
	Deregister(ctx context.Context, service, id string) (index uint64, err error)
	SetLeader(ctx context.Context, service, id string) (index uint64, err error)
	// SetServiceMeta writes meta if meta.Index is the current meta index (0 to
	// create) and returns the stored meta with its new index.
	SetServiceMeta(ctx context.Context, service string, meta *api.ServiceMeta) (*api.ServiceMeta, error)

	// Reads, from the local state. Consistent waits until the local state
	// holds every write acknowledged before the call (a leader round trip).
	Consistent(ctx context.Context) error
	Services() []string
	Instances(service string) ([]*api.Instance, error)
	Leader(service string) (*api.Instance, error)
	ServiceMeta(service string) (*api.ServiceMeta, error)
	AppliedIndex() uint64

	// Subscribe opens a stream of one service's events of the given kinds.
	// With resume false the stream opens with the current state (ups, leader,
	// service_meta, current). With resume true it opens with every event after
	// lastEventID if the node still holds them, or with a resync event and
	// then the current state.
	Subscribe(service string, kinds api.KindMask, lastEventID uint64, resume bool) (Stream, error)
	// WatchServices opens a stream of the service list: each service with
	// its instance count and leader, then their changes.
	WatchServices() (api.ServiceWatch, error)

	// Status describes the node for /.well-known/status.
	Status() api.Status

	// Metrics is the node's own Prometheus registry, served on /metrics.
	Metrics() prometheus.Gatherer
}

// Stream is an open event subscription (defined in api, so the node can
// return one without importing this package).
type Stream = api.Stream
