package api

import (
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
)

// Header names shared by the server and the client. They are spelled once,
// here, because the original discoverd's server and client disagreed on one.
const (
	// IndexHeader carries the answering node's applied Raft index.
	IndexHeader = "Discoverd-Index"
	// LastEventIDHeader is the SSE resume header sent by a reconnecting client.
	LastEventIDHeader = "Last-Event-ID"
	// ForwardedHeader marks a request a proxy or follower already forwarded, so
	// it is never forwarded a second time.
	ForwardedHeader = "Discoverd-Forwarded"
	// RelayedHeader marks a request a proxy relays for its client: it is
	// still judged by the client's own token, never as a node's.
	RelayedHeader = "Discoverd-Relayed"
)

// Instance is one registered endpoint of a service.
//
// Instances held by the server are immutable once stored: an update replaces
// the pointer, so readers may share them without copying.
type Instance struct {
	ID    string            `json:"id"`
	Addr  string            `json:"addr"`
	Proto string            `json:"proto"`
	Meta  map[string]string `json:"meta,omitempty"`
	// Index is the Raft index of the entry that first added the instance. It is
	// the instance's age and, for the leader, its fencing token.
	Index uint64 `json:"index"`
}

// DefaultInstanceID is the id of an instance registered without one, computed
// as the original discoverd did so that old clients keep their ids.
func DefaultInstanceID(proto, addr string) string {
	sum := md5.Sum([]byte(proto + "-" + addr))
	return hex.EncodeToString(sum[:])
}

// SameRegistration reports whether a and b describe the same registration:
// same id, addr, proto and meta. The index is not compared, as a heartbeat
// never carries one.
func (i *Instance) SameRegistration(b *Instance) bool {
	if i.ID != b.ID || i.Addr != b.Addr || i.Proto != b.Proto || len(i.Meta) != len(b.Meta) {
		return false
	}
	for k, v := range i.Meta {
		if bv, ok := b.Meta[k]; !ok || bv != v {
			return false
		}
	}
	return true
}

// LeaderType says how a service's leader is chosen.
type LeaderType string

const (
	// LeaderTypeOldest makes the live instance with the lowest index the leader.
	LeaderTypeOldest LeaderType = "oldest"
	// LeaderTypeManual makes the leader whichever instance was last set by hand.
	LeaderTypeManual LeaderType = "manual"
)

// ServiceConfig is the body of PUT /services/{service}.
type ServiceConfig struct {
	LeaderType LeaderType `json:"leader_type"`
}

// ServiceMeta is a service's free-form metadata. On a write, Index is the
// index the writer last saw (0 to create); the server answers with the new one.
type ServiceMeta struct {
	Data  json.RawMessage `json:"data"`
	Index uint64          `json:"index"`
}

// SetLeaderRequest is the body of PUT /services/{service}/leader.
type SetLeaderRequest struct {
	ID string `json:"id"`
}

// EventKind names what an Event reports.
type EventKind string

const (
	EventUp          EventKind = "up"
	EventUpdate      EventKind = "update"
	EventDown        EventKind = "down"
	EventLeader      EventKind = "leader"
	EventServiceMeta EventKind = "service_meta"
	// EventCurrent ends the current-state prelude of a stream.
	EventCurrent EventKind = "current"
	// EventResync tells a resuming stream that events were missed; the current
	// state follows.
	EventResync EventKind = "resync"
)

// EventKinds lists every kind, in the order of the bits of a KindMask.
var EventKinds = []EventKind{EventUp, EventUpdate, EventDown, EventLeader, EventServiceMeta, EventCurrent, EventResync}

// KindMask selects event kinds, one bit per entry of EventKinds.
type KindMask uint8

// Bit returns the mask bit of kind k, or 0 for an unknown kind.
func (k EventKind) Bit() KindMask {
	for i, kind := range EventKinds {
		if kind == k {
			return 1 << i
		}
	}
	return 0
}

// Has reports whether the mask selects kind k.
func (m KindMask) Has(k EventKind) bool { return m&k.Bit() != 0 }

// Mask builds a KindMask from kinds.
func Mask(kinds ...EventKind) KindMask {
	var m KindMask
	for _, k := range kinds {
		m |= k.Bit()
	}
	return m
}

// AllKinds selects every event kind.
const AllKinds KindMask = 1<<7 - 1

// Event is one change of a service, as streamed over SSE and NATS.
//
// A leader event with no Instance means the service has no leader. Index is
// the Raft index of the entry that produced the event.
type Event struct {
	Service     string       `json:"service"`
	Kind        EventKind    `json:"kind"`
	Instance    *Instance    `json:"instance,omitempty"`
	ServiceMeta *ServiceMeta `json:"service_meta,omitempty"`
	Index       uint64       `json:"index"`
}

// OK is the answer to a NATS heartbeat request that succeeded.
type OK struct {
	OK bool `json:"ok"`
}

// NodeInfo is what a node announces to the cluster about itself: its
// advertised HTTP/Raft address and the NATS addresses others reach it on.
type NodeInfo struct {
	Addr        string `json:"addr"`
	NATSAddr    string `json:"nats_addr,omitempty"`
	NATSCluster string `json:"nats_cluster_addr,omitempty"`
	NATSLeaf    string `json:"nats_leaf_addr,omitempty"`
	// Version is the build of discoverd the node runs.
	Version string `json:"version,omitempty"`
	// MaxCommandType is the newest Raft command type the node applies; the
	// leader writes a type only once every voter applies it. 0: a node from
	// before nodes announced it.
	MaxCommandType uint8 `json:"max_command_type,omitempty"`
}

// Peer is one voter and whether it is the Raft leader. GET /raft/peers
// answers the voters' addresses only; clients mark the leader from GET
// /raft/leader.
type Peer struct {
	Addr   string `json:"addr"`
	Leader bool   `json:"leader"`
}

// LeaderInfo is the body of GET /raft/leader.
type LeaderInfo struct {
	Host string `json:"host"`
}

// Status is the body of GET /.well-known/status.
type Status struct {
	Role         string `json:"role"` // "leader", "follower", "candidate" or "proxy"
	Addr         string `json:"addr"`
	Leader       string `json:"leader"`
	AppliedIndex uint64 `json:"applied_index"`
	Healthy      bool   `json:"healthy"`
	// Version is the build of discoverd the node runs.
	Version string `json:"version,omitempty"`
}

// AppliedCommand is the leader's answer to a write a follower forwarded to it
// (POST /raft/apply): the entry's index and what the state machine returned.
type AppliedCommand struct {
	Index    uint64       `json:"index"`
	Instance *Instance    `json:"instance,omitempty"`
	Meta     *ServiceMeta `json:"meta,omitempty"`
}

// AppliedResult is the answer to one write of several that a follower
// forwarded together (POST /raft/apply-batch): what AppliedCommand says of
// a write that applied, or the error of one that did not.
type AppliedResult struct {
	AppliedCommand
	Error *Error `json:"error,omitempty"`
}

// NATSTokenUser is the NATS user name under which a client that knows only
// its token's secret logs in (with the secret as the password): a digest of
// the secret, so the client needs no other name and the name shows nothing
// of the secret.
func NATSTokenUser(secret string) string {
	sum := sha256.Sum256([]byte("discoverd nats user\x00" + secret))
	return "token-" + hex.EncodeToString(sum[:12])
}
