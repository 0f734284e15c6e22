package history

import (
	"fmt"
	"slices"
	"strings"

	"github.com/discoverd/discoverd/api"
)

// CheckStream checks the events one watcher passed on, in order:
//
//   - indexes never go down;
//   - events that share an index are one Raft entry's events (or one
//     current-state prelude or reconciliation, which describe the state at
//     one index): no event repeats, no instance appears twice except as a
//     down followed by an up of a registration with a new index, and there
//     is at most one leader, one service_meta and one current event.
//
// Anything else (an index going back, the same event delivered twice, two
// leaders at one index) is reported, with the events around it.
func CheckStream(events []api.Event) []string {
	var problems []string
	groupStart := 0
	for i := range events {
		ev := &events[i]
		if i == 0 {
			continue
		}
		prev := &events[i-1]
		switch {
		case ev.Index < prev.Index:
			problems = append(problems, fmt.Sprintf("event %d: index went back from %d to %d:\n%s", i, prev.Index, ev.Index, around(events, i)))
			groupStart = i
		case ev.Index > prev.Index:
			groupStart = i
		default:
			if p := sameEntryProblem(events[groupStart:i], ev); p != "" {
				problems = append(problems, fmt.Sprintf("event %d: %s at index %d, which earlier events already used:\n%s", i, p, ev.Index, around(events, i)))
			}
		}
	}
	return problems
}

// sameEntryProblem says why ev cannot belong to the entry (or prelude) whose
// earlier events are group, or "" if it can.
func sameEntryProblem(group []api.Event, ev *api.Event) string {
	for j := range group {
		g := &group[j]
		if sameEvent(g, ev) {
			return "a repeated " + string(ev.Kind) + " event"
		}
		switch ev.Kind {
		case api.EventLeader, api.EventServiceMeta, api.EventCurrent, api.EventResync:
			if g.Kind == ev.Kind {
				return "a second " + string(ev.Kind) + " event"
			}
		case api.EventUp, api.EventUpdate, api.EventDown:
			if !isInstanceKind(g.Kind) || g.Instance == nil || ev.Instance == nil || g.Instance.ID != ev.Instance.ID {
				continue
			}
			// The one legitimate pair: the old registration goes down and a
			// new one (a new index) comes up.
			if g.Kind == api.EventDown && ev.Kind == api.EventUp && g.Instance.Index != ev.Instance.Index {
				continue
			}
			return fmt.Sprintf("a second event (%s after %s) of instance %s", ev.Kind, g.Kind, ev.Instance.ID)
		}
	}
	return ""
}

func isInstanceKind(k api.EventKind) bool {
	return k == api.EventUp || k == api.EventUpdate || k == api.EventDown
}

func sameEvent(a, b *api.Event) bool {
	if a.Kind != b.Kind || a.Index != b.Index || a.Service != b.Service {
		return false
	}
	if !sameInst(a.Instance, b.Instance) {
		return false
	}
	if (a.ServiceMeta == nil) != (b.ServiceMeta == nil) {
		return false
	}
	return a.ServiceMeta == nil || (a.ServiceMeta.Index == b.ServiceMeta.Index && compact(a.ServiceMeta.Data) == compact(b.ServiceMeta.Data))
}

func sameInst(a, b *api.Instance) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	return a.ID == b.ID && a.Index == b.Index && a.SameRegistration(b)
}

func around(events []api.Event, i int) string {
	var b strings.Builder
	for j := max(0, i-4); j < min(len(events), i+3); j++ {
		mark := "  "
		if j == i {
			mark = "> "
		}
		fmt.Fprintf(&b, "    %s%s\n", mark, DescribeEvent(&events[j]))
	}
	return strings.TrimRight(b.String(), "\n")
}

// DescribeEvent is a one-line description of an event.
func DescribeEvent(ev *api.Event) string {
	s := fmt.Sprintf("%d %s %s", ev.Index, ev.Service, ev.Kind)
	if ev.Instance != nil {
		s += fmt.Sprintf(" %s@%d", ev.Instance.ID, ev.Instance.Index)
	} else if ev.Kind == api.EventLeader {
		s += " (none)"
	}
	if ev.ServiceMeta != nil {
		s += fmt.Sprintf(" %s@%d", compact(ev.ServiceMeta.Data), ev.ServiceMeta.Index)
	}
	return s
}

// View is a service's state: what a watcher's events add up to, or what the
// cluster holds.
type View struct {
	Instances map[string]Inst
	// Leader is nil when the service has no leader.
	Leader *Inst
	// Meta is nil when the service has no meta.
	Meta *MetaView
}

// MetaView is a service's meta.
type MetaView struct {
	Data  string
	Index uint64
}

// Fold adds events up into a View.
func Fold(events []api.Event) View {
	v := View{Instances: map[string]Inst{}}
	for i := range events {
		v.Apply(&events[i])
	}
	return v
}

// Apply takes one event into the view.
func (v *View) Apply(ev *api.Event) {
	switch ev.Kind {
	case api.EventUp, api.EventUpdate:
		if ev.Instance != nil {
			v.Instances[ev.Instance.ID] = InstOf(ev.Instance)
		}
	case api.EventDown:
		if ev.Instance != nil {
			delete(v.Instances, ev.Instance.ID)
		}
	case api.EventLeader:
		if ev.Instance == nil {
			v.Leader = nil
		} else {
			in := InstOf(ev.Instance)
			v.Leader = &in
		}
	case api.EventServiceMeta:
		if ev.ServiceMeta != nil {
			v.Meta = &MetaView{Data: compact(ev.ServiceMeta.Data), Index: ev.ServiceMeta.Index}
		}
	}
}

// InstOf is an instance's Inst.
func InstOf(in *api.Instance) Inst {
	return Inst{ID: in.ID, Index: in.Index, Reg: Fingerprint(in)}
}

// StateView builds the View of a service's state as read from a server.
func StateView(instances []*api.Instance, leader *api.Instance, meta *api.ServiceMeta) View {
	v := View{Instances: map[string]Inst{}}
	for _, in := range instances {
		v.Instances[in.ID] = InstOf(in)
	}
	if leader != nil {
		l := InstOf(leader)
		v.Leader = &l
	}
	if meta != nil {
		v.Meta = &MetaView{Data: compact(meta.Data), Index: meta.Index}
	}
	return v
}

// Diff describes how v differs from want, "" when they are equal. The
// leader is compared by id and index (its fencing token).
func (v View) Diff(want View) string {
	var out []string
	ids := map[string]bool{}
	for id := range v.Instances {
		ids[id] = true
	}
	for id := range want.Instances {
		ids[id] = true
	}
	sorted := make([]string, 0, len(ids))
	for id := range ids {
		sorted = append(sorted, id)
	}
	slices.Sort(sorted)
	for _, id := range sorted {
		got, gok := v.Instances[id]
		w, wok := want.Instances[id]
		switch {
		case gok && !wok:
			out = append(out, fmt.Sprintf("has %s@%d, which is gone", id, got.Index))
		case !gok && wok:
			out = append(out, fmt.Sprintf("lacks %s@%d", id, w.Index))
		case got != w:
			out = append(out, fmt.Sprintf("has %s@%d [%s], not @%d [%s]", id, got.Index, got.Reg, w.Index, w.Reg))
		}
	}
	if !sameLeader(v.Leader, want.Leader) {
		out = append(out, fmt.Sprintf("leader %s, not %s", describeLeader(v.Leader), describeLeader(want.Leader)))
	}
	switch {
	case v.Meta == nil && want.Meta != nil:
		out = append(out, fmt.Sprintf("no meta, not %s@%d", want.Meta.Data, want.Meta.Index))
	case v.Meta != nil && want.Meta == nil:
		out = append(out, fmt.Sprintf("meta %s@%d, where there is none", v.Meta.Data, v.Meta.Index))
	case v.Meta != nil && *v.Meta != *want.Meta:
		out = append(out, fmt.Sprintf("meta %s@%d, not %s@%d", v.Meta.Data, v.Meta.Index, want.Meta.Data, want.Meta.Index))
	}
	return strings.Join(out, "; ")
}

func sameLeader(a, b *Inst) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	return a.ID == b.ID && a.Index == b.Index
}

func describeLeader(l *Inst) string {
	if l == nil {
		return "none"
	}
	return fmt.Sprintf("%s@%d", l.ID, l.Index)
}

// Segment is a stretch of one node's event stream of one service with no
// gap: it opens with a current-state prelude (ups, leader, service_meta,
// current, all at the node's applied index) and goes on with the live events
// the node applied after it. A stream that broke and resumed with
// Last-Event-ID without a resync goes on in the same segment.
type Segment struct {
	Node   string
	Events []api.Event
}

type leaderPoint struct {
	index  uint64
	leader *Inst
}

type coverage struct {
	node     string
	from, to uint64
	points   []leaderPoint
}

func (c *coverage) leaderAt(i uint64) (*Inst, bool) {
	if i < c.from || i > c.to || len(c.points) == 0 {
		return nil, false
	}
	var cur *leaderPoint
	for k := range c.points {
		if c.points[k].index > i {
			break
		}
		cur = &c.points[k]
	}
	if cur == nil {
		return nil, false
	}
	return cur.leader, true
}

// CheckLeaders checks that at every Raft index the nodes report the same
// leader of a service: each leader event a node sent (including the leader
// of each prelude) is compared with the leader every other node reported for
// that index, wherever that node's stream covered it.
func CheckLeaders(segments []Segment) []string {
	var covs []*coverage
	for _, s := range segments {
		c := &coverage{node: s.Node}
		for i := range s.Events {
			ev := &s.Events[i]
			if len(c.points) == 0 && ev.Kind != api.EventLeader {
				continue // coverage starts with the prelude's leader
			}
			if len(c.points) == 0 {
				c.from = ev.Index
			}
			c.to = max(c.to, ev.Index)
			if ev.Kind == api.EventLeader {
				var l *Inst
				if ev.Instance != nil {
					in := InstOf(ev.Instance)
					l = &in
				}
				c.points = append(c.points, leaderPoint{index: ev.Index, leader: l})
			}
		}
		if len(c.points) > 0 {
			covs = append(covs, c)
		}
	}
	var problems []string
	seen := map[string]bool{}
	for _, a := range covs {
		for _, p := range a.points {
			for _, b := range covs {
				if b.node == a.node {
					continue
				}
				l, ok := b.leaderAt(p.index)
				if !ok || sameLeader(l, p.leader) {
					continue
				}
				key := fmt.Sprintf("%d/%s/%s", p.index, a.node, b.node)
				if seen[key] {
					continue
				}
				seen[key] = true
				problems = append(problems, fmt.Sprintf("at index %d node %s reports leader %s, node %s reports %s",
					p.index, a.node, describeLeader(p.leader), b.node, describeLeader(l)))
			}
		}
	}
	return problems
}
