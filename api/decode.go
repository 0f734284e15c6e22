package api

import (
	"encoding/json"
	"strconv"
	"unicode/utf8"
)

// DecodeInstance decodes the JSON of an Instance into inst, which must be
// the zero Instance. Heartbeats, over HTTP and NATS, are the hottest path of
// the server, and their bodies nearly always have one simple shape.
//
// It accepts exactly what encoding/json accepts, with the same result. A fast
// path parses the shape clients send (an object of the fields id, addr,
// proto, meta and index, each at most once, with plain strings: no escapes,
// valid UTF-8) with one string allocation for all the strings of the
// message, plus the meta map; anything else (escapes, other or repeated
// keys, nulls, malformed input) goes to encoding/json, which has the final
// word on what is valid and what it means.
//
// Errors are encoding/json's own, for the caller to word.
func DecodeInstance(data []byte, inst *Instance) error {
	if fastDecodeInstance(data, inst) {
		return nil
	}
	*inst = Instance{}
	return json.Unmarshal(data, inst)
}

// Field bits of the fast path, to send a repeated key to encoding/json
// (which merges repeated meta objects: rare enough not to copy here).
const (
	fieldID = 1 << iota
	fieldAddr
	fieldProto
	fieldMeta
	fieldIndex
)

// fastDecodeInstance is the fast path of DecodeInstance. It returns false,
// leaving inst in any state, for any input it does not handle.
func fastDecodeInstance(data []byte, inst *Instance) bool {
	p := instParser{data: data}
	p.skipWS()
	if !p.consume('{') {
		return false
	}
	// All strings of the message are substrings of this one copy.
	var str string
	substr := func(start, end int) string {
		if str == "" {
			str = string(data)
		}
		return str[start:end]
	}
	var seen int
	p.skipWS()
	if !p.consume('}') {
		for {
			p.skipWS()
			ks, ke, ok := p.plainString()
			if !ok {
				return false
			}
			var bit int
			switch string(data[ks:ke]) { // no allocation: compared in place
			case "id":
				bit = fieldID
			case "addr":
				bit = fieldAddr
			case "proto":
				bit = fieldProto
			case "meta":
				bit = fieldMeta
			case "index":
				bit = fieldIndex
			default:
				return false
			}
			if seen&bit != 0 {
				return false
			}
			seen |= bit
			p.skipWS()
			if !p.consume(':') {
				return false
			}
			p.skipWS()
			switch bit {
			case fieldID, fieldAddr, fieldProto:
				s, e, ok := p.plainString()
				if !ok {
					return false
				}
				v := substr(s, e)
				switch bit {
				case fieldID:
					inst.ID = v
				case fieldAddr:
					inst.Addr = v
				default:
					inst.Proto = v
				}
			case fieldMeta:
				if !p.consume('{') {
					return false
				}
				m := make(map[string]string)
				p.skipWS()
				if !p.consume('}') {
					for {
						p.skipWS()
						ks, ke, ok := p.plainString()
						if !ok {
							return false
						}
						p.skipWS()
						if !p.consume(':') {
							return false
						}
						p.skipWS()
						vs, ve, ok := p.plainString()
						if !ok {
							return false
						}
						m[substr(ks, ke)] = substr(vs, ve)
						p.skipWS()
						if p.consume(',') {
							continue
						}
						if p.consume('}') {
							break
						}
						return false
					}
				}
				inst.Meta = m
			case fieldIndex:
				n, ok := p.uint()
				if !ok {
					return false
				}
				inst.Index = n
			}
			p.skipWS()
			if p.consume(',') {
				continue
			}
			if p.consume('}') {
				break
			}
			return false
		}
	}
	p.skipWS()
	return p.i == len(data)
}

type instParser struct {
	data []byte
	i    int
}

func (p *instParser) skipWS() {
	for p.i < len(p.data) {
		switch p.data[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

func (p *instParser) consume(c byte) bool {
	if p.i < len(p.data) && p.data[p.i] == c {
		p.i++
		return true
	}
	return false
}

// plainString reads a JSON string with no escapes and valid UTF-8, and
// returns the bounds of its contents.
func (p *instParser) plainString() (start, end int, ok bool) {
	if !p.consume('"') {
		return 0, 0, false
	}
	start = p.i
	ascii := true
	for p.i < len(p.data) {
		c := p.data[p.i]
		switch {
		case c == '"':
			end = p.i
			p.i++
			if !ascii && !utf8.Valid(p.data[start:end]) {
				return 0, 0, false
			}
			return start, end, true
		case c == '\\' || c < 0x20:
			return 0, 0, false
		case c >= 0x80:
			ascii = false
		}
		p.i++
	}
	return 0, 0, false
}

// uint reads a JSON number that is a plain unsigned integer fitting uint64.
func (p *instParser) uint() (uint64, bool) {
	start := p.i
	for p.i < len(p.data) && p.data[p.i] >= '0' && p.data[p.i] <= '9' {
		p.i++
	}
	digits := p.data[start:p.i]
	if len(digits) == 0 || len(digits) > 1 && digits[0] == '0' {
		return 0, false
	}
	// A fraction or exponent follows: leave the number to encoding/json.
	if p.i < len(p.data) {
		switch p.data[p.i] {
		case '.', 'e', 'E':
			return 0, false
		}
	}
	n, err := strconv.ParseUint(string(digits), 10, 64) // no allocation
	return n, err == nil
}
