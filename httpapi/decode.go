package httpapi

import (
	"encoding/json"
	"unicode/utf8"

	"github.com/discoverd/discoverd/api"
)

// decodeInstance decodes an instance body. Heartbeats are the hottest route
// and their bodies are nearly always the same simple shape, so a fast path
// parses that shape without reflection; anything else (escapes, unknown or
// differently cased keys, nulls, odd numbers, malformed JSON) goes to
// encoding/json, which decides and words the errors.
func decodeInstance(b []byte, inst *api.Instance) error {
	if fastDecodeInstance(b, inst) {
		return nil
	}
	*inst = api.Instance{}
	return json.Unmarshal(b, inst)
}

// fastDecodeInstance parses b into inst when b is an object with only the
// keys id, addr, proto (plain strings), meta (an object of plain strings)
// and index (a plain non-negative integer), each at most once. It reports
// false, leaving inst in any state, when b is anything else. When it reports
// true, inst is exactly what json.Unmarshal would have made of b.
func fastDecodeInstance(b []byte, inst *api.Instance) bool {
	p := parser{b: b}
	if !p.consume('{') {
		return false
	}
	var seen uint8
	if p.peek() == '}' {
		p.i++
		return p.end()
	}
	for {
		key, ok := p.rawString()
		if !ok || !p.consume(':') {
			return false
		}
		var bit uint8
		switch string(key) {
		case "id":
			bit = 1
			if inst.ID, ok = p.str(); !ok {
				return false
			}
		case "addr":
			bit = 2
			if inst.Addr, ok = p.str(); !ok {
				return false
			}
		case "proto":
			bit = 4
			if inst.Proto, ok = p.str(); !ok {
				return false
			}
		case "meta":
			bit = 8
			if inst.Meta, ok = p.meta(); !ok {
				return false
			}
		case "index":
			bit = 16
			if inst.Index, ok = p.uint(); !ok {
				return false
			}
		default:
			return false
		}
		if seen&bit != 0 {
			return false
		}
		seen |= bit
		p.ws()
		if p.i >= len(p.b) {
			return false
		}
		switch p.b[p.i] {
		case ',':
			p.i++
		case '}':
			p.i++
			return p.end()
		default:
			return false
		}
	}
}

type parser struct {
	b []byte
	i int
}

func (p *parser) ws() {
	for p.i < len(p.b) {
		switch p.b[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

func (p *parser) peek() byte {
	p.ws()
	if p.i < len(p.b) {
		return p.b[p.i]
	}
	return 0
}

func (p *parser) consume(c byte) bool {
	if p.peek() != c {
		return false
	}
	p.i++
	return true
}

// end reports whether only whitespace is left.
func (p *parser) end() bool {
	p.ws()
	return p.i == len(p.b)
}

// rawString returns the bytes of a string with no escapes, no control
// characters and valid UTF-8.
func (p *parser) rawString() ([]byte, bool) {
	if !p.consume('"') {
		return nil, false
	}
	start := p.i
	ascii := true
	for p.i < len(p.b) {
		c := p.b[p.i]
		switch {
		case c == '"':
			s := p.b[start:p.i]
			p.i++
			if !ascii && !utf8.Valid(s) {
				return nil, false
			}
			return s, true
		case c == '\\' || c < 0x20:
			return nil, false
		case c >= utf8.RuneSelf:
			ascii = false
		}
		p.i++
	}
	return nil, false
}

func (p *parser) str() (string, bool) {
	s, ok := p.rawString()
	return string(s), ok
}

// meta parses a non-empty object of plain strings with no repeated key.
func (p *parser) meta() (map[string]string, bool) {
	if !p.consume('{') {
		return nil, false
	}
	m := make(map[string]string, 4)
	if p.peek() == '}' {
		p.i++
		return m, true
	}
	for {
		k, ok := p.str()
		if !ok || !p.consume(':') {
			return nil, false
		}
		v, ok := p.str()
		if !ok {
			return nil, false
		}
		if _, dup := m[k]; dup {
			return nil, false
		}
		m[k] = v
		p.ws()
		if p.i >= len(p.b) {
			return nil, false
		}
		switch p.b[p.i] {
		case ',':
			p.i++
		case '}':
			p.i++
			return m, true
		default:
			return nil, false
		}
	}
}

// uint parses a plain JSON integer that fits a uint64: no sign, fraction,
// exponent or leading zero.
func (p *parser) uint() (uint64, bool) {
	p.ws()
	start := p.i
	var n uint64
	for p.i < len(p.b) && p.b[p.i] >= '0' && p.b[p.i] <= '9' {
		d := uint64(p.b[p.i] - '0')
		if n > (1<<64-1-d)/10 {
			return 0, false
		}
		n = n*10 + d
		p.i++
	}
	digits := p.i - start
	if digits == 0 || digits > 1 && p.b[start] == '0' {
		return 0, false
	}
	if p.i < len(p.b) {
		switch p.b[p.i] {
		case '.', 'e', 'E':
			return 0, false
		}
	}
	return n, true
}
