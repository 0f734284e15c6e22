package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"

	"github.com/discoverd/discoverd/api"
)

// sseStream reads the events of one SSE response.
type sseStream struct {
	body   io.ReadCloser
	br     *bufio.Reader
	data   []byte
	cancel context.CancelFunc
}

// openSSE opens an event stream of path on server i (round robin).
func (b *bench) openSSE(ctx context.Context, i int, path string) (*sseStream, error) {
	return b.openSSEWith(ctx, b.client, i, path)
}

// openSSEWith is openSSE through hc.
func (b *bench) openSSEWith(ctx context.Context, hc *http.Client, i int, path string) (*sseStream, error) {
	srv := b.servers[i%len(b.servers)]
	if len(b.servers) > 1 {
		// The service was just created through the first server; another
		// one serves from its own state, which may not hold it yet, and
		// would answer 404. A consistent read waits until it does.
		path += "?consistent=true"
	}
	ctx, cancel := context.WithCancel(ctx)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, srv.base+path, nil)
	if err != nil {
		cancel()
		return nil, err
	}
	req.Header.Set("Accept", "text/event-stream")
	resp, err := hc.Do(req)
	if err != nil {
		cancel()
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		resp.Body.Close()
		cancel()
		return nil, fmt.Errorf("GET %s: %w", path, httpError(resp.StatusCode, body))
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/event-stream") {
		resp.Body.Close()
		cancel()
		return nil, fmt.Errorf("GET %s: Content-Type %q, want text/event-stream", path, ct)
	}
	return &sseStream{body: resp.Body, br: bufio.NewReaderSize(resp.Body, 8<<10), cancel: cancel}, nil
}

func (s *sseStream) close() {
	s.cancel()
	s.body.Close()
}

// next returns the next event. An "error" event ends the stream with the
// API error it carries.
func (s *sseStream) next() (api.Event, error) {
	s.data = s.data[:0]
	isError := false
	for {
		line, err := s.br.ReadSlice('\n')
		if err == bufio.ErrBufferFull {
			// A long line: gather it whole.
			full := append([]byte(nil), line...)
			for err == bufio.ErrBufferFull {
				line, err = s.br.ReadSlice('\n')
				full = append(full, line...)
			}
			line = full
		}
		if err != nil {
			return api.Event{}, err
		}
		line = bytes.TrimRight(line, "\r\n")
		switch {
		case len(line) == 0:
			if len(s.data) == 0 {
				isError = false
				continue
			}
			if isError {
				return api.Event{}, sseErrorEvent(s.data)
			}
			return decodeShared(s.data)
		case line[0] == ':':
		case bytes.HasPrefix(line, []byte("data:")):
			v := bytes.TrimPrefix(line[5:], []byte(" "))
			if len(s.data) > 0 {
				s.data = append(s.data, '\n')
			}
			s.data = append(s.data, v...)
		case bytes.HasPrefix(line, []byte("event:")):
			isError = string(bytes.TrimSpace(line[6:])) == "error"
		}
	}
}

// sseErrorEvent is the error an "error" event with data carries: the API
// error the server ended the stream with.
func sseErrorEvent(data []byte) error {
	var e api.Error
	if json.Unmarshal(data, &e) == nil && e.Code != "" {
		return fmt.Errorf("stream ended: %w", &e)
	}
	return fmt.Errorf("stream ended with error %s", data)
}

// lastDecoded is the event the streams decoded last. In a fanout every
// stream reads the same bytes for each leader change, and decoding them
// once, not once per stream, keeps the harness from being the slower side
// at 100,000 streams; every stream's bytes are still read and compared.
var lastDecoded atomic.Pointer[decodedEvent]

type decodedEvent struct {
	data string
	ev   api.Event
}

// decodeShared decodes data as an event; the event's instance may be
// shared with other streams and must not be changed.
func decodeShared(data []byte) (api.Event, error) {
	if d := lastDecoded.Load(); d != nil && d.data == string(data) {
		return d.ev, nil
	}
	var ev api.Event
	if err := json.Unmarshal(data, &ev); err != nil {
		return api.Event{}, fmt.Errorf("malformed event %q: %v", data, err)
	}
	lastDecoded.Store(&decodedEvent{data: string(data), ev: ev})
	return ev, nil
}

// untilCurrent reads the current-state prelude of a new stream, up to and
// including its current event.
func (s *sseStream) untilCurrent() error {
	for {
		ev, err := s.next()
		if err != nil {
			return err
		}
		if ev.Kind == api.EventCurrent {
			return nil
		}
	}
}
