package fsm

import (
	"sort"

	"github.com/discoverd/discoverd/api"
)

// service is the state of one service.
//
// Instances are kept twice: by id for lookup, and in order of index for the
// oldest-leader rule and for listing. Because an instance's index is the Raft
// index of its first add, a new instance always has the highest index so far
// and is appended; a removal leaves a nil hole that is skipped, and the holes
// are compacted away once they are half the slice. Each id maps to its slot,
// so every change costs O(1) amortized and leader upkeep never scans.
type service struct {
	name   string
	config api.ServiceConfig
	byID   map[string]slot
	// order holds instances sorted by index; removed ones are nil holes.
	order []*api.Instance
	// head is the position of the first non-nil entry of order (or len(order)).
	head  int
	holes int
	// manualLeader is the leader's id for a manual service ("" for none).
	manualLeader string
	meta         *api.ServiceMeta
}

// slot is an instance and its position in service.order.
type slot struct {
	inst *api.Instance
	pos  int
}

func newService(name string, cfg api.ServiceConfig) *service {
	return &service{name: name, config: cfg, byID: make(map[string]slot)}
}

func (s *service) get(id string) *api.Instance {
	return s.byID[id].inst
}

// leader returns the current leader, or nil.
func (s *service) leader() *api.Instance {
	if s.config.LeaderType == api.LeaderTypeManual {
		if s.manualLeader == "" {
			return nil
		}
		return s.get(s.manualLeader)
	}
	if s.head < len(s.order) {
		return s.order[s.head]
	}
	return nil
}

// put stores inst, appending it when new and replacing it in place when it
// updates an existing instance (which keeps its index).
func (s *service) put(inst *api.Instance) {
	if old, ok := s.byID[inst.ID]; ok {
		s.order[old.pos] = inst
		s.byID[inst.ID] = slot{inst, old.pos}
		return
	}
	if n := len(s.order); n > 0 && s.order[n-1] != nil && s.order[n-1].Index >= inst.Index {
		// Only a snapshot written out of order could get here; keep the order
		// right rather than trust it.
		s.byID[inst.ID] = slot{inst, n}
		s.order = append(s.order, inst)
		s.rebuildOrder()
		return
	}
	s.byID[inst.ID] = slot{inst, len(s.order)}
	s.order = append(s.order, inst)
}

// remove deletes the instance with id and returns it, or nil if absent.
func (s *service) remove(id string) *api.Instance {
	sl, ok := s.byID[id]
	if !ok {
		return nil
	}
	delete(s.byID, id)
	s.order[sl.pos] = nil
	s.holes++
	for s.head < len(s.order) && s.order[s.head] == nil {
		s.head++
	}
	if s.manualLeader == id {
		s.manualLeader = ""
	}
	if s.holes > 16 && s.holes > len(s.order)/2 {
		s.compact()
	}
	return sl.inst
}

func (s *service) compact() {
	out := make([]*api.Instance, 0, len(s.byID)+len(s.byID)/4)
	for _, inst := range s.order {
		if inst != nil {
			s.byID[inst.ID] = slot{inst, len(out)}
			out = append(out, inst)
		}
	}
	s.order = out
	s.head = 0
	s.holes = 0
}

func (s *service) rebuildOrder() {
	s.order = s.order[:0]
	for _, sl := range s.byID {
		s.order = append(s.order, sl.inst)
	}
	sort.Slice(s.order, func(i, j int) bool { return s.order[i].Index < s.order[j].Index })
	for i, inst := range s.order {
		s.byID[inst.ID] = slot{inst, i}
	}
	s.head = 0
	s.holes = 0
}

// instances returns the instances in order of index.
func (s *service) instances() []*api.Instance {
	out := make([]*api.Instance, 0, len(s.byID))
	for _, inst := range s.order[s.head:] {
		if inst != nil {
			out = append(out, inst)
		}
	}
	return out
}
