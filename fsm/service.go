package fsm

import (
	"sort"

	"github.com/discoverd/discoverd/api"
)

// service is the state of one service.
//
// Instances are kept in order of index, for the oldest-leader rule and for
// listing, and found by id through a hash index of their positions. Because
// an instance's index is the Raft index of its first add, a new instance
// always has the highest index so far and is appended; a removal leaves a nil
// hole that is skipped, and the holes are compacted away once they are half
// the slice. So every change costs O(1) amortized and leader upkeep never
// scans.
type service struct {
	name   string
	config api.ServiceConfig
	// index maps each live instance's id to its position in order.
	index idIndex
	// order holds instances sorted by index; removed ones are nil holes.
	order []*api.Instance
	// head is the position of the first non-nil entry of order (or len(order)).
	head  int
	holes int
	// manualLeader is the leader's id for a manual service ("" for none).
	manualLeader string
	meta         *api.ServiceMeta
}

func newService(name string, cfg api.ServiceConfig) *service {
	return &service{name: name, config: cfg, index: newIDIndex()}
}

// len is the number of instances.
func (s *service) len() int { return s.index.n }

func (s *service) get(id string) *api.Instance {
	if p := s.index.find(s.order, id); p >= 0 {
		return s.order[p]
	}
	return nil
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
	if p := s.index.find(s.order, inst.ID); p >= 0 {
		s.order[p] = inst
		return
	}
	n := len(s.order)
	s.order = append(s.order, inst)
	if n > 0 && s.order[n-1] != nil && s.order[n-1].Index >= inst.Index {
		// Only a snapshot written out of order could get here; keep the order
		// right rather than trust it.
		s.rebuildOrder()
		return
	}
	s.index.insert(inst.ID, n)
}

// remove deletes the instance with id and returns it, or nil if absent.
func (s *service) remove(id string) *api.Instance {
	p := s.index.remove(s.order, id)
	if p < 0 {
		return nil
	}
	inst := s.order[p]
	s.order[p] = nil
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
	return inst
}

func (s *service) compact() {
	n := s.len()
	out := make([]*api.Instance, 0, n+n/4)
	for _, inst := range s.order {
		if inst != nil {
			out = append(out, inst)
		}
	}
	s.order = out
	s.head = 0
	s.holes = 0
	s.index.rebuild(s.order)
}

func (s *service) rebuildOrder() {
	live := s.order[:0]
	for _, inst := range s.order {
		if inst != nil {
			live = append(live, inst)
		}
	}
	clear(s.order[len(live):])
	s.order = live
	sort.Slice(s.order, func(i, j int) bool { return s.order[i].Index < s.order[j].Index })
	s.head = 0
	s.holes = 0
	s.index.rebuild(s.order)
}

// instances returns the instances in order of index.
func (s *service) instances() []*api.Instance {
	out := make([]*api.Instance, 0, s.len())
	for _, inst := range s.order[s.head:] {
		if inst != nil {
			out = append(out, inst)
		}
	}
	return out
}
