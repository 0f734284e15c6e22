package fsm

import (
	"bytes"
	"encoding/binary"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/discoverd/discoverd/api"
)

// The compact body of CmdAddInstanceCompact is a sequence of byte strings,
// each a uvarint length followed by the bytes:
//
//	service, id, addr, proto,
//	uvarint n, then n meta entries: key, value (keys in increasing byte order)
//
// and nothing after. The instance's index is not carried: the state machine
// assigns it. The encoding of an instance is canonical (meta sorted), so
// the same registration always gives the same bytes.
//
// The layout is fixed: a change to it is a new command type.

// EncodeAddInstance builds a CmdAddInstanceCompact log entry registering
// inst in service.
func EncodeAddInstance(service string, inst *api.Instance) []byte {
	size := 1 + 5*4 + len(service) + len(inst.ID) + len(inst.Addr) + len(inst.Proto) + 5
	for k, v := range inst.Meta {
		size += 10 + len(k) + len(v)
	}
	return AppendAddInstance(make([]byte, 0, size), service, inst)
}

// AppendAddInstance appends the CmdAddInstanceCompact entry of
// EncodeAddInstance to dst.
func AppendAddInstance(dst []byte, service string, inst *api.Instance) []byte {
	dst = append(dst, byte(CmdAddInstanceCompact))
	dst = appendString(dst, service)
	dst = appendString(dst, inst.ID)
	dst = appendString(dst, inst.Addr)
	dst = appendString(dst, inst.Proto)
	dst = binary.AppendUvarint(dst, uint64(len(inst.Meta)))
	if len(inst.Meta) == 0 {
		return dst
	}
	keys := make([]string, 0, len(inst.Meta))
	for k := range inst.Meta {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		dst = appendString(dst, k)
		dst = appendString(dst, inst.Meta[k])
	}
	return dst
}

func appendString(dst []byte, s string) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(s)))
	return append(dst, s...)
}

// compactReader reads the byte strings of a compact body; the first error
// sticks and every later read returns nothing.
type compactReader struct {
	b   []byte
	off int
	err error
}

func (r *compactReader) uvarint() uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b[r.off:])
	if n <= 0 {
		r.fail("truncated or overlong length")
		return 0
	}
	r.off += n
	return v
}

func (r *compactReader) bytes() []byte {
	l := r.uvarint()
	if r.err != nil {
		return nil
	}
	if l > uint64(len(r.b)-r.off) {
		r.fail("a string runs past the end")
		return nil
	}
	s := r.b[r.off : r.off+int(l)]
	r.off += int(l)
	return s
}

func (r *compactReader) fail(msg string) {
	if r.err == nil {
		r.err = api.Errorf(api.CodeValidation, "malformed command body: %s at byte %d", msg, r.off)
	}
}

// validMeta reports whether every key and value of the meta entries in b
// (already checked for framing) is valid UTF-8, each string on its own:
// the length bytes between them are not text.
func validMeta(b []byte) bool {
	r := compactReader{b: b}
	for r.off < len(b) && r.err == nil {
		if !utf8.Valid(r.bytes()) {
			return false
		}
	}
	return r.err == nil
}

// decodeAddInstance decodes a compact body. The service name is returned as
// a slice of body (it is only looked up); the instance's strings are copies,
// all in one allocation, so the stored instance keeps nothing of the log
// entry alive. The instance is not validated (api.PrepareInstance does
// that, as for the JSON command).
func decodeAddInstance(body []byte) ([]byte, api.Instance, error) {
	r := compactReader{b: body}
	service := r.bytes()
	id, addr, proto := r.bytes(), r.bytes(), r.bytes()
	n := r.uvarint()
	metaAt := r.off
	// Each meta entry takes at least two bytes (its two lengths).
	if r.err == nil && n > uint64(len(body)-r.off)/2 {
		r.fail("more meta entries than bytes")
	}
	size := len(id) + len(addr) + len(proto)
	var prev []byte
	for i := uint64(0); i < n && r.err == nil; i++ {
		k, v := r.bytes(), r.bytes()
		if i > 0 && bytes.Compare(prev, k) >= 0 {
			r.fail("meta keys out of order or repeated")
		}
		prev = k
		size += len(k) + len(v)
	}
	if r.err == nil && r.off != len(body) {
		r.fail("trailing bytes")
	}
	// Every other way into the log (JSON) carries valid UTF-8 only, and
	// snapshots are JSON: a string that is not would not survive one.
	if r.err == nil && !(utf8.Valid(id) && utf8.Valid(addr) && utf8.Valid(proto) && validMeta(body[metaAt:])) {
		r.err = api.Errorf(api.CodeValidation, "malformed command body: a string is not valid UTF-8")
	}
	if r.err != nil {
		return nil, api.Instance{}, r.err
	}

	var sb strings.Builder
	sb.Grow(size)
	sb.Write(id)
	sb.Write(addr)
	sb.Write(proto)
	if n == 0 {
		block := sb.String()
		a, b := len(id), len(id)+len(addr)
		return service, api.Instance{ID: block[:a], Addr: block[a:b], Proto: block[b:]}, nil
	}
	// Second pass over the meta, already checked: copy it into the block.
	r.off = metaAt
	for i := uint64(0); i < n; i++ {
		sb.Write(r.bytes())
		sb.Write(r.bytes())
	}
	block := sb.String()
	in := api.Instance{}
	at := 0
	take := func(l int) string {
		s := block[at : at+l]
		at += l
		return s
	}
	in.ID, in.Addr, in.Proto = take(len(id)), take(len(addr)), take(len(proto))
	in.Meta = make(map[string]string, n)
	r.off = metaAt
	for i := uint64(0); i < n; i++ {
		k := take(len(r.bytes()))
		in.Meta[k] = take(len(r.bytes()))
	}
	return service, in, nil
}
