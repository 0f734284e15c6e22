package fsm

import (
	"fmt"
	"math/rand/v2"
	"strconv"
	"testing"

	"github.com/discoverd/discoverd/api"
)

// checkService verifies the ordered-slice-with-holes structure of one
// service: order sorted by index with nil holes, head at the first live
// entry, holes counted right and compacted in time, and byID pointing at
// each instance's slot.
func checkService(t testing.TB, s *service) {
	t.Helper()
	for i := 0; i < s.head; i++ {
		if s.order[i] != nil {
			t.Fatalf("%s: order[%d] before head %d is live", s.name, i, s.head)
		}
	}
	if s.head > len(s.order) || s.head < len(s.order) && s.order[s.head] == nil {
		t.Fatalf("%s: head %d does not point at a live instance (len %d)", s.name, s.head, len(s.order))
	}
	holes, live := 0, 0
	var last uint64
	for i, inst := range s.order {
		if inst == nil {
			holes++
			continue
		}
		if live > 0 && inst.Index <= last {
			t.Fatalf("%s: order[%d] has index %d after %d", s.name, i, inst.Index, last)
		}
		last = inst.Index
		live++
		if p := s.index.find(s.order, inst.ID); p != i || s.get(inst.ID) != inst {
			t.Fatalf("%s: index finds %s at %d, instance is at %d", s.name, inst.ID, p, i)
		}
	}
	if holes != s.holes {
		t.Fatalf("%s: %d holes, counted %d", s.name, holes, s.holes)
	}
	if live != s.len() {
		t.Fatalf("%s: %d live in order, %d in the index", s.name, live, s.len())
	}
	checkIndex(t, s)
	if s.holes > 16 && s.holes > len(s.order)/2 {
		t.Fatalf("%s: %d holes in %d slots were not compacted", s.name, s.holes, len(s.order))
	}
	if s.manualLeader != "" && s.get(s.manualLeader) == nil {
		t.Fatalf("%s: manual leader %q is not an instance", s.name, s.manualLeader)
	}
}

// checkIndex verifies the id index of one service: as many used slots as
// live instances, each pointing at a live instance whose id has its tag and
// reachable from its home slot without crossing an empty one, and a load
// of at most 3/4.
func checkIndex(t testing.TB, s *service) {
	t.Helper()
	x := &s.index
	if len(x.slots) != 0 && len(x.slots)&(len(x.slots)-1) != 0 {
		t.Fatalf("%s: %d index slots, not a power of two", s.name, len(x.slots))
	}
	if x.n*4 > len(x.slots)*3 {
		t.Fatalf("%s: %d entries in %d index slots", s.name, x.n, len(x.slots))
	}
	used := 0
	seen := make(map[int]bool)
	for i, sl := range x.slots {
		if sl == 0 {
			continue
		}
		used++
		p := slotPos(sl)
		if p < 0 || p >= len(s.order) || s.order[p] == nil {
			t.Fatalf("%s: index slot %d points at %d, not a live instance", s.name, i, p)
		}
		if seen[p] {
			t.Fatalf("%s: two index slots point at %d", s.name, p)
		}
		seen[p] = true
		if got := x.tag(s.order[p].ID); got != slotTag(sl) {
			t.Fatalf("%s: index slot %d has tag %x, %s hashes to %x", s.name, i, slotTag(sl), s.order[p].ID, got)
		}
		mask := x.mask()
		for j := slotTag(sl) & mask; j != uint32(i); j = (j + 1) & mask {
			if x.slots[j] == 0 {
				t.Fatalf("%s: index slot %d is cut off from its home %d by an empty slot at %d", s.name, i, slotTag(sl)&mask, j)
			}
		}
	}
	if used != x.n {
		t.Fatalf("%s: %d index slots used, %d counted", s.name, used, x.n)
	}
}

func checkAllServices(t testing.TB, f *FSM) {
	t.Helper()
	f.mu.RLock()
	defer f.mu.RUnlock()
	for _, s := range f.services {
		checkService(t, s)
	}
}

// bigModel is the reference for TestLargeService: the instances in order of
// registration (which is order of index), with a lazily advanced pointer to
// the oldest live one.
type bigModel struct {
	regs   []bigReg
	byID   map[string]int // id -> position in regs of its live registration
	oldest int
}

type bigReg struct {
	id    string
	index uint64
	live  bool
}

func (m *bigModel) add(id string, index uint64) {
	m.byID[id] = len(m.regs)
	m.regs = append(m.regs, bigReg{id: id, index: index, live: true})
}

func (m *bigModel) remove(id string) bigReg {
	p := m.byID[id]
	delete(m.byID, id)
	m.regs[p].live = false
	for m.oldest < len(m.regs) && !m.regs[m.oldest].live {
		m.oldest++
	}
	return m.regs[p]
}

// oldestReg returns the oldest live registration, or nil.
func (m *bigModel) oldestReg() *bigReg {
	if m.oldest < len(m.regs) {
		return &m.regs[m.oldest]
	}
	return nil
}

// bigEvent is what TestLargeService checks of each event, without the cost
// of formatting it.
type bigEvent struct {
	kind  api.EventKind
	id    string // "" for a leader event with no instance
	inst  uint64 // the instance's index
	index uint64 // the event's index
}

func toBig(evs []api.Event) []bigEvent {
	out := make([]bigEvent, len(evs))
	for i, e := range evs {
		out[i] = bigEvent{kind: e.Kind, index: e.Index}
		if e.Service != "big" {
			out[i].kind = "wrong service " + api.EventKind(e.Service)
		}
		if e.Instance != nil {
			out[i].id, out[i].inst = e.Instance.ID, e.Instance.Index
		}
	}
	return out
}

func sameBig(a, b []bigEvent) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestLargeService adds 100,000 instances to one service, removes them in
// random order, then churns, checking every event (and so every leader
// change) against a reference model at each step, and the whole service and
// its slice structure every few thousand steps.
func TestLargeService(t *testing.T) {
	n := 100_000
	if testing.Short() {
		n = 10_000
	}
	const checkEvery = 9973
	rng := rand.New(rand.NewPCG(1, 2))

	var last []api.Event
	f := New(func(evs []api.Event) { last = append(last[:0], evs...) })
	var index uint64
	applyRaw := func(data []byte) []bigEvent {
		index++
		last = last[:0]
		if res := f.ApplyCommand(index, data); res.Err != nil {
			t.Fatalf("entry %d (%s): %v", index, data, res.Err)
		}
		return toBig(last)
	}
	apply := func(t CommandType, body any) []bigEvent { return applyRaw(MustEncode(t, body)) }
	// Hand-encoded, as the JSON encoder would: reflection would cost more
	// than the FSM itself here.
	addCmd := func(id, addr string) []byte {
		return []byte("\x05" + `{"service":"big","instance":{"id":"` + id + `","addr":"` + addr + `","proto":"tcp","index":0}}`)
	}
	removeCmd := func(id string) []byte {
		return []byte("\x06" + `{"service":"big","id":"` + id + `"}`)
	}
	if got, want := string(addCmd("x", "h:1")), string(MustEncode(CmdAddInstance, AddInstance{Service: "big", Instance: api.Instance{ID: "x", Addr: "h:1", Proto: "tcp"}})); got != want {
		t.Fatalf("hand encoding %s, want %s", got, want)
	}
	if got, want := string(removeCmd("x")), string(MustEncode(CmdRemoveInstance, RemoveInstance{Service: "big", ID: "x"})); got != want {
		t.Fatalf("hand encoding %s, want %s", got, want)
	}
	m := &bigModel{byID: make(map[string]int)}
	check := func(step int) {
		t.Helper()
		checkAllServices(t, f)
		insts, _ := f.Instances("big")
		k := 0
		for _, r := range m.regs[m.oldest:] {
			if !r.live {
				continue
			}
			if k >= len(insts) || insts[k].ID != r.id || insts[k].Index != r.index {
				t.Fatalf("step %d: instance %d is not %s/%d", step, k, r.id, r.index)
			}
			k++
		}
		if k != len(insts) {
			t.Fatalf("step %d: %d instances, want %d", step, len(insts), k)
		}
		l, _ := f.Leader("big")
		switch want := m.oldestReg(); {
		case want == nil && l != nil:
			t.Fatalf("step %d: leader %s/%d, want none", step, l.ID, l.Index)
		case want != nil && (l == nil || l.ID != want.id || l.Index != want.index):
			t.Fatalf("step %d: leader %v, want %s/%d", step, l, want.id, want.index)
		}
	}
	addOne := func(id string) {
		empty := m.oldestReg() == nil
		evs := applyRaw(addCmd(id, "10.0.0.1:"+strconv.Itoa(1+len(m.regs)%65535)))
		m.add(id, index)
		want := []bigEvent{{api.EventUp, id, index, index}}
		if empty {
			want = append(want, bigEvent{api.EventLeader, id, index, index})
		}
		if !sameBig(evs, want) {
			t.Fatalf("add %s at %d: events %v, want %v", id, index, evs, want)
		}
	}
	removeOne := func(id string) {
		before := m.oldestReg()
		wasLeader := before != nil && before.id == id
		evs := applyRaw(removeCmd(id))
		r := m.remove(id)
		want := []bigEvent{{api.EventDown, id, r.index, index}}
		if wasLeader {
			next := bigEvent{kind: api.EventLeader, index: index}
			if o := m.oldestReg(); o != nil {
				next.id, next.inst = o.id, o.index
			}
			want = append(want, next)
		}
		if !sameBig(evs, want) {
			t.Fatalf("remove %s at %d: events %v, want %v", id, index, evs, want)
		}
	}

	apply(CmdAddService, addSvc("big", ""))
	ids := make([]string, n)
	for i := range ids {
		ids[i] = "i" + strconv.Itoa(i)
		addOne(ids[i])
		if i%checkEvery == 0 {
			check(i)
		}
	}
	check(n)

	// Remove all in random order.
	rng.Shuffle(len(ids), func(i, j int) { ids[i], ids[j] = ids[j], ids[i] })
	for i, id := range ids {
		removeOne(id)
		if i%checkEvery == 0 {
			check(i)
		}
	}
	check(n)
	if l, _ := f.Leader("big"); l != nil {
		t.Fatalf("leader %v of an empty service", l)
	}

	// Churn: adds (new ids and re-registered old ones), removals (often of
	// the leader), and updates, which must never move the leader.
	live := []string{}
	dead := append([]string(nil), ids...)
	next := n
	for step := 0; step < n; step++ {
		switch r := rng.IntN(10); {
		case len(live) == 0 || r < 4:
			var id string
			if len(dead) > 0 && rng.IntN(2) == 0 {
				k := rng.IntN(len(dead))
				id = dead[k]
				dead[k] = dead[len(dead)-1]
				dead = dead[:len(dead)-1]
			} else {
				id = "i" + strconv.Itoa(next)
				next++
			}
			addOne(id)
			live = append(live, id)
		case r < 8:
			k := 0 // live is in order of index: live[0] is the leader
			if r < 6 {
				k = rng.IntN(len(live))
			}
			id := live[k]
			live = append(live[:k], live[k+1:]...)
			removeOne(id)
			dead = append(dead, id)
		default:
			id := live[rng.IntN(len(live))]
			reg := m.regs[m.byID[id]]
			evs := applyRaw(addCmd(id, "10.0.0.2:"+strconv.Itoa(1+step%65535)))
			if want := []bigEvent{{api.EventUpdate, id, reg.index, index}}; !sameBig(evs, want) {
				t.Fatalf("update %s: events %v, want %v", id, evs, want)
			}
		}
		if step%checkEvery == 0 {
			check(step)
		}
	}
	check(-1)
}

// TestServiceCompaction drives the slice through compaction and reuse of a
// fully emptied slice, checking the structure after every change.
func TestServiceCompaction(t *testing.T) {
	h := newHarness(t)
	h.ok(1, CmdAddService, addSvc("a", ""))
	h.ok(2, CmdAddService, addSvc("m", api.LeaderTypeManual))
	idx := uint64(10)
	for round := 0; round < 3; round++ {
		for i := 0; i < 40; i++ {
			h.ok(idx, CmdAddInstance, inst("a", fmt.Sprint("x", i), "h:1", nil))
			h.ok(idx+1, CmdAddInstance, inst("m", fmt.Sprint("x", i), "h:1", nil))
			idx += 2
			checkAllServices(t, h.f)
		}
		h.ok(idx, CmdSetLeader, SetLeader{Service: "m", ID: "x39"})
		idx++
		// Remove from the back, so the holes are not at the head.
		for i := 39; i >= 0; i-- {
			h.ok(idx, CmdRemoveInstance, RemoveInstance{Service: "a", ID: fmt.Sprint("x", i)})
			h.ok(idx+1, CmdRemoveInstance, RemoveInstance{Service: "m", ID: fmt.Sprint("x", i)})
			idx += 2
			checkAllServices(t, h.f)
			if i > 0 {
				h.expectLeader("a", fmt.Sprintf("x0/%d", 10+round*161))
			}
		}
		h.expectLeader("a", "-")
		h.expectLeader("m", "-")
		h.rec.take()
	}
}

// TestIDIndexChurn runs small indexes (where runs wrap around the end of
// the slots) through random inserts, updates and removals against a map,
// checking the whole structure after every step.
func TestIDIndexChurn(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for round := 0; round < 200; round++ {
		s := newService("s", api.ServiceConfig{LeaderType: api.LeaderTypeOldest})
		model := map[string]*api.Instance{}
		ids := 1 + rng.IntN(40)
		var index uint64
		for step := 0; step < 300; step++ {
			id := "i" + strconv.Itoa(rng.IntN(ids))
			switch {
			case rng.IntN(3) > 0:
				index++
				in := &api.Instance{ID: id, Addr: "h:" + strconv.Itoa(step+1), Proto: "tcp", Index: index}
				if old := model[id]; old != nil {
					in.Index = old.Index
				}
				s.put(in)
				model[id] = in
			default:
				got := s.remove(id)
				if got != model[id] {
					t.Fatalf("round %d step %d: remove %s = %v, want %v", round, step, id, got, model[id])
				}
				delete(model, id)
			}
			checkService(t, s)
			if s.len() != len(model) {
				t.Fatalf("round %d step %d: %d instances, want %d", round, step, s.len(), len(model))
			}
			for i := 0; i < ids; i++ {
				id := "i" + strconv.Itoa(i)
				if got := s.get(id); got != model[id] {
					t.Fatalf("round %d step %d: get %s = %v, want %v", round, step, id, got, model[id])
				}
			}
		}
	}
}
