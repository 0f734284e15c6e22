package bus

import (
	"unsafe"

	"github.com/discoverd/discoverd/api"
)

// rawHeartbeat is a heartbeat payload checked in place, without decoding:
// the byte ranges of its fields in the payload. A service heartbeats the
// same instance over and over; comparing its payload with the registered
// instance costs no allocation and no validation (what equals a registered
// instance is valid), where decoding it copied its strings and built its
// meta map for every message.
//
// scan accepts only the plainest form of an instance's JSON: one object
// with the keys id (a non-empty string), addr, proto and meta (an object
// of at most maxRawMeta string values) each at most once, strings of
// printable ASCII without escapes, and nothing but whitespace around it.
// Anything else (escapes, an index, unknown keys, null, a missing id, so
// a default one, bad JSON) is left to the full decoder: scan says no, and
// the heartbeat takes the decoding path as before.
type rawHeartbeat struct {
	data             []byte
	id, addr, proto  span
	hasAddr, hasMeta bool
	hasProto         bool
	meta             [maxRawMeta][2]span
	nmeta            int
}

// maxRawMeta bounds the meta pairs checked in place (duplicates are looked
// for pair by pair, so the work grows with its square).
const maxRawMeta = 16

type span struct{ start, end int32 }

func (r *rawHeartbeat) bytes(s span) []byte { return r.data[s.start:s.end] }

// idString is the id as a string that shares the payload's memory: valid
// only while the message is being handled, and never to be kept.
func (r *rawHeartbeat) idString() string {
	b := r.bytes(r.id)
	return unsafe.String(unsafe.SliceData(b), len(b))
}

// scan parses data into r; false means data is not in the plain form.
func (r *rawHeartbeat) scan(data []byte) bool {
	if len(data) > 1<<30 {
		return false
	}
	*r = rawHeartbeat{data: data}
	i := skipSpace(data, 0)
	if i >= len(data) || data[i] != '{' {
		return false
	}
	i = skipSpace(data, i+1)
	var hasID bool
	if i < len(data) && data[i] == '}' {
		return false // no id
	}
	for {
		key, j, ok := plainString(data, i)
		if !ok {
			return false
		}
		i = skipSpace(data, j)
		if i >= len(data) || data[i] != ':' {
			return false
		}
		i = skipSpace(data, i+1)
		var seen *bool
		var dst *span
		switch string(data[key.start:key.end]) {
		case "id":
			seen, dst = &hasID, &r.id
		case "addr":
			seen, dst = &r.hasAddr, &r.addr
		case "proto":
			seen, dst = &r.hasProto, &r.proto
		case "meta":
			if r.hasMeta {
				return false
			}
			r.hasMeta = true
			if i, ok = r.scanMeta(data, i); !ok {
				return false
			}
		default:
			return false
		}
		if seen != nil {
			if *seen {
				return false
			}
			*seen = true
			if *dst, i, ok = plainString(data, i); !ok {
				return false
			}
		}
		i = skipSpace(data, i)
		if i >= len(data) {
			return false
		}
		if data[i] == '}' {
			i++
			break
		}
		if data[i] != ',' {
			return false
		}
		i = skipSpace(data, i+1)
	}
	return hasID && r.id.end > r.id.start && skipSpace(data, i) == len(data)
}

// scanMeta parses the meta object starting at data[i].
func (r *rawHeartbeat) scanMeta(data []byte, i int) (int, bool) {
	if i >= len(data) || data[i] != '{' {
		return 0, false
	}
	i = skipSpace(data, i+1)
	if i < len(data) && data[i] == '}' {
		return i + 1, true
	}
	for {
		k, j, ok := plainString(data, i)
		if !ok || r.nmeta == maxRawMeta {
			return 0, false
		}
		kb := data[k.start:k.end]
		for _, p := range r.meta[:r.nmeta] {
			if string(r.bytes(p[0])) == string(kb) {
				return 0, false // a repeated key: the decoder's merge rules apply
			}
		}
		i = skipSpace(data, j)
		if i >= len(data) || data[i] != ':' {
			return 0, false
		}
		v, j, ok := plainString(data, skipSpace(data, i+1))
		if !ok {
			return 0, false
		}
		r.meta[r.nmeta] = [2]span{k, v}
		r.nmeta++
		i = skipSpace(data, j)
		if i >= len(data) {
			return 0, false
		}
		if data[i] == '}' {
			return i + 1, true
		}
		if data[i] != ',' {
			return 0, false
		}
		i = skipSpace(data, i+1)
	}
}

// sameAs reports whether the scanned heartbeat carries stored's
// registration, as api.PrepareInstance then stored.SameRegistration would
// find after decoding it.
func (r *rawHeartbeat) sameAs(stored *api.Instance) bool {
	if string(r.bytes(r.id)) != stored.ID ||
		!r.hasAddr || string(r.bytes(r.addr)) != stored.Addr ||
		!r.hasProto || string(r.bytes(r.proto)) != stored.Proto ||
		r.nmeta != len(stored.Meta) {
		return false
	}
	for _, p := range r.meta[:r.nmeta] {
		v, ok := stored.Meta[string(r.bytes(p[0]))]
		if !ok || v != string(r.bytes(p[1])) {
			return false
		}
	}
	return true
}

func skipSpace(data []byte, i int) int {
	for i < len(data) {
		switch data[i] {
		case ' ', '\t', '\n', '\r':
			i++
		default:
			return i
		}
	}
	return i
}

// plainString parses a JSON string at data[i] of printable ASCII with no
// escape, and returns its contents' range and the index after
// it.
func plainString(data []byte, i int) (span, int, bool) {
	if i >= len(data) || data[i] != '"' {
		return span{}, 0, false
	}
	start := i + 1
	for j := start; j < len(data); j++ {
		switch c := data[j]; {
		case c == '"':
			return span{int32(start), int32(j)}, j + 1, true
		case c == '\\' || c < 0x20 || c >= 0x80:
			// Escapes, and bytes the decoder may replace (invalid UTF-8).
			return span{}, 0, false
		}
	}
	return span{}, 0, false
}
