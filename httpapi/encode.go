package httpapi

import (
	"encoding/json"
	"slices"
	"strconv"
	"sync"
	"unicode/utf8"

	"github.com/discoverd/discoverd/api"
)

// The appenders below write the same bytes as encoding/json.Marshal for the
// hot types (instances, events, errors) without reflection or allocation:
// heartbeats and event streams encode one of these per request or event.

// bufPool holds response and request-body buffers.
var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}

// maxPooledBuf is the largest buffer put back into bufPool, so that one huge
// response does not pin its memory.
const maxPooledBuf = 64 << 10

func getBuf() *[]byte { return bufPool.Get().(*[]byte) }

func putBuf(b *[]byte) {
	if cap(*b) > maxPooledBuf {
		return
	}
	*b = (*b)[:0]
	bufPool.Put(b)
}

const hexDigits = "0123456789abcdef"

// appendString appends s as a JSON string, escaped as encoding/json does
// (including its HTML escaping of <, > and &).
func appendString(dst []byte, s string) []byte {
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

// appendInstance appends inst as JSON, as json.Marshal would.
func appendInstance(dst []byte, inst *api.Instance) []byte {
	if inst == nil {
		return append(dst, "null"...)
	}
	dst = append(dst, `{"id":`...)
	dst = appendString(dst, inst.ID)
	dst = append(dst, `,"addr":`...)
	dst = appendString(dst, inst.Addr)
	dst = append(dst, `,"proto":`...)
	dst = appendString(dst, inst.Proto)
	if len(inst.Meta) > 0 {
		dst = append(dst, `,"meta":{`...)
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
			dst = appendString(dst, k)
			dst = append(dst, ':')
			dst = appendString(dst, inst.Meta[k])
		}
		dst = append(dst, '}')
	}
	dst = append(dst, `,"index":`...)
	dst = strconv.AppendUint(dst, inst.Index, 10)
	return append(dst, '}')
}

// appendServiceMeta appends m as JSON, as json.Marshal would. It is off the
// hot path, so the free-form data goes through encoding/json, which compacts
// it (an SSE data line must not hold a newline).
func appendServiceMeta(dst []byte, m *api.ServiceMeta) []byte {
	if m == nil {
		return append(dst, "null"...)
	}
	dst = append(dst, `{"data":`...)
	data, err := json.Marshal(m.Data)
	if err != nil || len(m.Data) == 0 {
		data = []byte("null")
	}
	dst = append(dst, data...)
	dst = append(dst, `,"index":`...)
	dst = strconv.AppendUint(dst, m.Index, 10)
	return append(dst, '}')
}

// appendEvent appends ev as JSON, as json.Marshal would.
func appendEvent(dst []byte, ev *api.Event) []byte {
	dst = append(dst, `{"service":`...)
	dst = appendString(dst, ev.Service)
	dst = append(dst, `,"kind":`...)
	dst = appendString(dst, string(ev.Kind))
	if ev.Instance != nil {
		dst = append(dst, `,"instance":`...)
		dst = appendInstance(dst, ev.Instance)
	}
	if ev.ServiceMeta != nil {
		dst = append(dst, `,"service_meta":`...)
		dst = appendServiceMeta(dst, ev.ServiceMeta)
	}
	dst = append(dst, `,"index":`...)
	dst = strconv.AppendUint(dst, ev.Index, 10)
	return append(dst, '}')
}

// appendError appends e as JSON, as json.Marshal would.
func appendError(dst []byte, e *api.Error) []byte {
	dst = append(dst, `{"code":`...)
	dst = appendString(dst, string(e.Code))
	dst = append(dst, `,"message":`...)
	dst = appendString(dst, e.Message)
	dst = append(dst, `,"retry":`...)
	dst = strconv.AppendBool(dst, e.Retry)
	return append(dst, '}')
}

// jsonMarshal is json.Marshal with a trailing newline, for the rare bodies.
func jsonMarshal(v any) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}
