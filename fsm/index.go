package fsm

import (
	"hash/maphash"

	"github.com/discoverd/discoverd/api"
)

// idIndex maps the ids of a service's live instances to their positions in
// service.order. It is an open-addressing hash table with linear probing
// whose slots are one word each: 32 bits of the id's hash (the tag) and the
// position plus one (0 marks an empty slot). The ids themselves are not
// copied: a lookup whose tag matches compares against order[pos].ID.
//
// It holds at most 3/4 of its slots, so it costs 8 bytes a slot, 11 to 21
// bytes an instance, where a map[string]struct{*api.Instance; int} cost
// about 48. Lookups compare ids only on a tag match, and removal shifts the
// following entries back (no tombstones), so a table that lives through any
// churn stays as fast as a fresh one.
//
// The hash seed is random, as Go's own maps' are, so that clients choosing
// ids cannot make the table degrade. Only the layout depends on it, never a
// result: the state machine stays deterministic.
type idIndex struct {
	seed  maphash.Seed
	slots []uint64
	n     int
}

func newIDIndex() idIndex { return idIndex{seed: maphash.MakeSeed()} }

const minIndexSlots = 8

func (x *idIndex) tag(id string) uint32 { return uint32(maphash.String(x.seed, id) >> 32) }

func (x *idIndex) mask() uint32 { return uint32(len(x.slots) - 1) }

func makeSlot(tag uint32, pos int) uint64 { return uint64(tag)<<32 | uint64(uint32(pos+1)) }

func slotTag(sl uint64) uint32 { return uint32(sl >> 32) }

func slotPos(sl uint64) int { return int(uint32(sl)) - 1 }

// lookup returns the slot holding id, or -1.
func (x *idIndex) lookup(order []*api.Instance, id string) int {
	if x.n == 0 {
		return -1
	}
	tag, mask := x.tag(id), x.mask()
	for i := tag & mask; ; i = (i + 1) & mask {
		sl := x.slots[i]
		if sl == 0 {
			return -1
		}
		if slotTag(sl) == tag && order[slotPos(sl)].ID == id {
			return int(i)
		}
	}
}

// find returns the position of id in order, or -1.
func (x *idIndex) find(order []*api.Instance, id string) int {
	if i := x.lookup(order, id); i >= 0 {
		return slotPos(x.slots[i])
	}
	return -1
}

// insert adds id, which must be absent, at position pos.
func (x *idIndex) insert(id string, pos int) {
	if (x.n+1)*4 > len(x.slots)*3 {
		x.resize(max(minIndexSlots, 2*len(x.slots)))
	}
	x.place(makeSlot(x.tag(id), pos))
	x.n++
}

func (x *idIndex) place(sl uint64) {
	mask := x.mask()
	i := slotTag(sl) & mask
	for x.slots[i] != 0 {
		i = (i + 1) & mask
	}
	x.slots[i] = sl
}

func (x *idIndex) resize(size int) {
	old := x.slots
	x.slots = make([]uint64, size)
	for _, sl := range old {
		if sl != 0 {
			x.place(sl)
		}
	}
}

// remove deletes id and returns its position, or -1 if it is absent. The
// entries after it in its run move back to fill the gap when their home
// slot allows, so every entry stays reachable from its home.
func (x *idIndex) remove(order []*api.Instance, id string) int {
	li := x.lookup(order, id)
	if li < 0 {
		return -1
	}
	i := uint32(li)
	pos := slotPos(x.slots[i])
	mask := x.mask()
	for j := (i + 1) & mask; x.slots[j] != 0; j = (j + 1) & mask {
		home := slotTag(x.slots[j]) & mask
		// The entry at j may fill the gap at i unless its home lies
		// cyclically in (i, j].
		if (j > i && (home <= i || home > j)) || (j < i && home <= i && home > j) {
			x.slots[i] = x.slots[j]
			i = j
		}
	}
	x.slots[i] = 0
	x.n--
	return pos
}

// rebuild indexes every non-nil instance of order at its position, sized
// for them (so a service that shrank gives its slots back).
func (x *idIndex) rebuild(order []*api.Instance) {
	n := 0
	for _, inst := range order {
		if inst != nil {
			n++
		}
	}
	size := minIndexSlots
	for size < 2*n {
		size *= 2
	}
	x.slots = make([]uint64, size)
	x.n = 0
	for pos, inst := range order {
		if inst != nil {
			x.place(makeSlot(x.tag(inst.ID), pos))
			x.n++
		}
	}
}
