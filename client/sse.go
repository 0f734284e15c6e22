package client

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/discoverd/discoverd/api"
)

const sseContentType = "text/event-stream"

// maxSSELine bounds one line of an event stream (an event's JSON).
const maxSSELine = 16 << 20

// sseReader reads Server-Sent Events: "id:", "event:" and "data:" fields,
// ":" comments ignored, a blank line ending each event.
type sseReader struct {
	r *bufio.Reader
	// activity is called on every line read, comments included (the
	// stream's idle watchdog).
	activity func()
	line     []byte
}

func newSSEReader(r io.Reader, activity func()) *sseReader {
	return &sseReader{r: bufio.NewReaderSize(r, 32<<10), activity: activity}
}

// readLine returns one line without its line ending.
func (s *sseReader) readLine() ([]byte, error) {
	s.line = s.line[:0]
	for {
		frag, err := s.r.ReadSlice('\n')
		s.line = append(s.line, frag...)
		if err == nil {
			break
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			if len(s.line) > maxSSELine {
				return nil, fmt.Errorf("event stream line longer than %d bytes", maxSSELine)
			}
			continue
		}
		if err == io.EOF && len(s.line) > 0 {
			return nil, io.ErrUnexpectedEOF
		}
		return nil, err
	}
	if s.activity != nil {
		s.activity()
	}
	line := bytes.TrimSuffix(s.line, []byte("\n"))
	return bytes.TrimSuffix(line, []byte("\r")), nil
}

// next returns the next event of the stream. An "error" event (the server
// ending the stream with an api.Error) is returned as that error.
func (s *sseReader) next() (api.Event, error) {
	var (
		data    []byte
		hasData bool
		kind    string
	)
	for {
		line, err := s.readLine()
		if err != nil {
			return api.Event{}, err
		}
		if len(line) == 0 {
			if !hasData {
				kind = ""
				continue
			}
			if kind == "error" {
				var e api.Error
				if err := json.Unmarshal(data, &e); err != nil || e.Code == "" {
					return api.Event{}, &api.Error{Code: api.CodeUnavailable, Retry: true,
						Message: "event stream ended with an error: " + string(data)}
				}
				return api.Event{}, &e
			}
			var ev api.Event
			if err := json.Unmarshal(data, &ev); err != nil {
				return api.Event{}, fmt.Errorf("decoding event %q: %w", data, err)
			}
			return ev, nil
		}
		if line[0] == ':' {
			continue // comment (keep-alive)
		}
		field, value, _ := bytes.Cut(line, []byte(":"))
		value = bytes.TrimPrefix(value, []byte(" "))
		switch string(field) {
		case "data":
			if hasData {
				data = append(data, '\n')
			}
			data = append(data, value...)
			hasData = true
		case "event":
			kind = string(value)
		case "id", "retry":
			// The id repeats the event's index, which the JSON carries.
		}
	}
}
