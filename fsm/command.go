package fsm

import (
	"encoding/json"
	"fmt"

	"github.com/discoverd/discoverd/api"
)

// CommandType is the first byte of every Raft log entry discoverd writes.
//
// The numbers are part of the on-disk format: never reuse or renumber one,
// only add new types at the end.
type CommandType uint8

const (
	_                  CommandType = iota // 0 is never a valid command
	CmdAddService                         // 1
	CmdRemoveService                      // 2
	CmdSetServiceMeta                     // 3
	CmdSetLeader                          // 4
	CmdAddInstance                        // 5: add, update or keep (unchanged)
	CmdRemoveInstance                     // 6
	CmdExpireInstances                    // 7
	CmdSetNode                            // 8
	CmdRemoveNode                         // 9
	// CmdAddInstanceCompact is CmdAddInstance with the compact binary body
	// of EncodeAddInstance instead of JSON: a third of the bytes in the log
	// and a decode that allocates once. Type 5 is still applied, for logs
	// written before.
	CmdAddInstanceCompact // 10
	// CmdAddInstances is a batch of CmdAddInstanceCompact registrations in
	// one entry (see batch.go): one disk write and one AppendEntries slot
	// for many. Each registration takes its own revision.
	CmdAddInstances // 11
)

func (t CommandType) String() string {
	switch t {
	case CmdAddService:
		return "add_service"
	case CmdRemoveService:
		return "remove_service"
	case CmdSetServiceMeta:
		return "set_service_meta"
	case CmdSetLeader:
		return "set_leader"
	case CmdAddInstance:
		return "add_instance"
	case CmdRemoveInstance:
		return "remove_instance"
	case CmdExpireInstances:
		return "expire_instances"
	case CmdSetNode:
		return "set_node"
	case CmdRemoveNode:
		return "remove_node"
	case CmdAddInstanceCompact:
		return "add_instance_compact"
	case CmdAddInstances:
		return "add_instances"
	}
	return "unknown"
}

// AddService creates a service.
type AddService struct {
	Service string            `json:"service"`
	Config  api.ServiceConfig `json:"config"`
}

// RemoveService removes a service with its instances, leader and meta.
type RemoveService struct {
	Service string `json:"service"`
}

// SetServiceMeta writes a service's meta if Meta.Index equals the current
// meta's index (0 when there is none yet).
type SetServiceMeta struct {
	Service string          `json:"service"`
	Meta    api.ServiceMeta `json:"meta"`
}

// SetLeader makes an instance the leader of a manual service.
type SetLeader struct {
	Service string `json:"service"`
	ID      string `json:"id"`
}

// AddInstance registers an instance, or updates it when its addr, proto or
// meta changed.
type AddInstance struct {
	Service  string       `json:"service"`
	Instance api.Instance `json:"instance"`
}

// RemoveInstance deregisters an instance.
type RemoveInstance struct {
	Service string `json:"service"`
	ID      string `json:"id"`
}

// ExpiredInstance names one instance an expiry check found dead. Index pins
// the registration that was seen: if the instance was removed and registered
// again since, the newer registration is left alone.
type ExpiredInstance struct {
	Service string `json:"service"`
	ID      string `json:"id"`
	Index   uint64 `json:"index"`
}

// ExpireInstances removes every instance of one expiry check in one entry.
type ExpireInstances struct {
	Instances []ExpiredInstance `json:"instances"`
}

// SetNode records the addresses a node announces to the cluster.
type SetNode struct {
	Node api.NodeInfo `json:"node"`
}

// RemoveNode forgets a node's announcement.
type RemoveNode struct {
	Addr string `json:"addr"`
}

// Encode builds a log entry: the type byte followed by the JSON body, or
// for CmdAddInstanceCompact (body an AddInstance or *AddInstance) the
// compact body of EncodeAddInstance.
func Encode(t CommandType, body any) ([]byte, error) {
	if t == CmdAddInstanceCompact {
		switch c := body.(type) {
		case *AddInstance:
			return EncodeAddInstance(c.Service, &c.Instance), nil
		case AddInstance:
			return EncodeAddInstance(c.Service, &c.Instance), nil
		}
		return nil, fmt.Errorf("fsm: %s takes an AddInstance, not %T", t, body)
	}
	b, err := json.Marshal(body)
	if err != nil {
		return nil, err
	}
	out := make([]byte, 1+len(b))
	out[0] = byte(t)
	copy(out[1:], b)
	return out, nil
}

// MustEncode is Encode for bodies that cannot fail to marshal (every command
// type of this package).
func MustEncode(t CommandType, body any) []byte {
	b, err := Encode(t, body)
	if err != nil {
		panic("fsm: encoding " + t.String() + ": " + err.Error())
	}
	return b
}
