package api

import (
	"slices"
	"strconv"
	"unicode/utf8"
)

// The appenders below write the same bytes as encoding/json.Marshal, without
// reflection or allocation: the server encodes an instance for every
// heartbeat answer, every streamed event and every instance of a snapshot,
// and one encoder for all of them keeps those bytes from drifting apart.

const hexDigits = "0123456789abcdef"

// AppendString appends s to dst as a JSON string, escaped exactly as
// json.Marshal escapes it: with its HTML escaping of <, > and &, U+2028 and
// U+2029 as \u escapes, and each byte of invalid UTF-8 as \ufffd.
func AppendString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		if b := s[i]; b < utf8.RuneSelf {
			if b >= 0x20 && b != '"' && b != '\\' && b != '<' && b != '>' && b != '&' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch b {
			case '\\', '"':
				dst = append(dst, '\\', b)
			case '\b':
				dst = append(dst, '\\', 'b')
			case '\f':
				dst = append(dst, '\\', 'f')
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[b>>4], hexDigits[b&0xF])
			}
			i++
			start = i
			continue
		}
		c, size := utf8.DecodeRuneInString(s[i:])
		if c == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if c == '\u2028' || c == '\u2029' {
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[c&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

// AppendInstance appends inst to dst as JSON, byte for byte what json.Marshal
// writes for it: meta left out when empty, its keys sorted, and null for a
// nil inst.
func AppendInstance(dst []byte, inst *Instance) []byte {
	if inst == nil {
		return append(dst, "null"...)
	}
	dst = append(dst, `{"id":`...)
	dst = AppendString(dst, inst.ID)
	dst = append(dst, `,"addr":`...)
	dst = AppendString(dst, inst.Addr)
	dst = append(dst, `,"proto":`...)
	dst = AppendString(dst, inst.Proto)
	if len(inst.Meta) > 0 {
		dst = append(dst, `,"meta":{`...)
		// Sorting on the stack keeps the usual handful of keys free of
		// allocation; only a larger meta spills to the heap.
		var arr [16]string
		keys := arr[:0]
		for k := range inst.Meta {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for i, k := range keys {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = AppendString(dst, k)
			dst = append(dst, ':')
			dst = AppendString(dst, inst.Meta[k])
		}
		dst = append(dst, '}')
	}
	dst = append(dst, `,"index":`...)
	dst = strconv.AppendUint(dst, inst.Index, 10)
	return append(dst, '}')
}
