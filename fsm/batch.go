package fsm

import (
	"encoding/binary"

	"github.com/discoverd/discoverd/api"
)

// A CmdAddInstances entry carries several registrations, so that concurrent
// registrations share one disk write and one slot of an AppendEntries
// instead of one each. Its body is
//
//	uvarint n, then n times: uvarint length, a CmdAddInstanceCompact body
//
// and nothing after. The registrations are applied in order, each on its
// own: one that is rejected (unknown service, invalid instance) changes
// nothing and fails alone, and the others apply.
//
// Revisions. An instance's index must stay unique and increasing (the
// oldest-leader rule and the fencing tokens of clients depend on it), yet
// the registrations of a batch share one Raft index. So the state machine
// numbers what it applies with its own revision: an entry at Raft index i
// starts at max(last revision + 1, i), and a batch of n registrations takes
// n consecutive revisions from there, rejected ones included. Where no
// batch was ever written the revision is the Raft index exactly, as in the
// releases before, so old logs and snapshots read the same. The applied
// index the state machine reports, its snapshots, its events and the index
// it hands back for a write are revisions: every comparison of indexes in
// discoverd is between two of them, never with Raft's own.

// maxBatchRegistrations bounds the registrations of one entry, as a
// sanity limit on a body (the leader's batcher writes far fewer).
const maxBatchRegistrations = 1 << 16

// AppendAddInstances appends a CmdAddInstances entry to dst made of the
// CmdAddInstanceCompact entries in cmds (as EncodeAddInstance builds them,
// type byte first). It panics on an entry of another type: only the
// leader's batcher calls it, with entries it checked.
func AppendAddInstances(dst []byte, cmds [][]byte) []byte {
	dst = append(dst, byte(CmdAddInstances))
	dst = binary.AppendUvarint(dst, uint64(len(cmds)))
	for _, c := range cmds {
		if len(c) == 0 || CommandType(c[0]) != CmdAddInstanceCompact {
			panic("fsm: AppendAddInstances takes add_instance_compact entries only")
		}
		dst = binary.AppendUvarint(dst, uint64(len(c)-1))
		dst = append(dst, c[1:]...)
	}
	return dst
}

// AddInstancesSize is the length of the entry AppendAddInstances builds
// from cmds, to size its buffer.
func AddInstancesSize(cmds [][]byte) int {
	n := 1 + binary.MaxVarintLen64
	for _, c := range cmds {
		n += binary.MaxVarintLen64 + len(c)
	}
	return n
}

// revision is the revision of the first change applied by the entry at
// Raft index raftIndex: the index itself unless batches put the revisions
// ahead of the log. (An index not past the applied one otherwise, which
// only tests apply, keeps its own number, as it always did.)
func (f *FSM) revision(raftIndex uint64) uint64 {
	switch {
	case raftIndex > f.applied:
		return raftIndex
	case f.applied > f.raftIndex:
		return f.applied + 1
	}
	return raftIndex
}

// addInstances applies a CmdAddInstances body whose first registration
// takes revision rev. The entry's result carries one result per
// registration in res.Batch; res.Err is set only when the body itself is
// malformed, and then nothing is applied.
func (f *FSM) addInstances(rev uint64, body []byte, res *Result) {
	r := compactReader{b: body}
	n := r.uvarint()
	// Each registration takes at least its length byte and the five
	// lengths of an empty one.
	if r.err == nil && (n == 0 || n > maxBatchRegistrations || n > uint64(len(body)-r.off)/6) {
		r.fail("a batch of registrations holds none or more than its bytes allow")
	}
	start := r.off
	for i := uint64(0); i < n && r.err == nil; i++ {
		r.bytes()
	}
	if r.err == nil && r.off != len(body) {
		r.fail("trailing bytes")
	}
	if r.err != nil {
		res.Err = r.err
		return
	}
	res.Batch = make([]Result, n)
	r.off = start
	for i := range res.Batch {
		op := &res.Batch[i]
		op.Index = rev + uint64(i)
		name, in, err := decodeAddInstance(r.bytes())
		switch {
		case err != nil:
			op.Err = err
		default:
			if s, ok := f.services[string(name)]; !ok {
				op.Err = notFound(string(name))
			} else {
				op.Instance, op.Err = f.addInstance(op.Index, s, in)
			}
		}
	}
	f.applied = rev + n - 1
	// The entry's own result names its last revision: once a node has
	// applied up to it, it holds every registration of the batch.
	res.Index = f.applied
}

// DecodeAddInstances returns the CmdAddInstanceCompact entries of a
// CmdAddInstances entry (type byte first), for tools that read the log.
func DecodeAddInstances(cmd []byte) ([][]byte, error) {
	if len(cmd) == 0 || CommandType(cmd[0]) != CmdAddInstances {
		return nil, api.Errorf(api.CodeValidation, "not an %s entry", CmdAddInstances)
	}
	r := compactReader{b: cmd[1:]}
	n := r.uvarint()
	if r.err == nil && n > uint64(len(cmd)) {
		r.fail("more registrations than bytes")
	}
	var out [][]byte
	for i := uint64(0); i < n && r.err == nil; i++ {
		b := r.bytes()
		if r.err == nil {
			out = append(out, append([]byte{byte(CmdAddInstanceCompact)}, b...))
		}
	}
	if r.err == nil && r.off != len(cmd)-1 {
		r.fail("trailing bytes")
	}
	return out, r.err
}
