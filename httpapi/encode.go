package httpapi

import (
	"encoding/json"
	"strconv"
	"sync"

	"github.com/discoverd/discoverd/api"
)

// The appenders below write the same bytes as encoding/json.Marshal for
// events and errors (instances and strings through package api's appenders)
// without reflection or allocation: heartbeats and event streams encode one
// of these per request or event.

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
	dst = api.AppendString(dst, ev.Service)
	dst = append(dst, `,"kind":`...)
	dst = api.AppendString(dst, string(ev.Kind))
	if ev.Instance != nil {
		dst = append(dst, `,"instance":`...)
		dst = api.AppendInstance(dst, ev.Instance)
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
	dst = api.AppendString(dst, string(e.Code))
	dst = append(dst, `,"message":`...)
	dst = api.AppendString(dst, e.Message)
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
