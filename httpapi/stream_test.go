package httpapi_test

import (
	"bufio"
	"encoding/json"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/discoverd/discoverd/api"
)

// registerMany registers n instances of service from several goroutines,
// so that Raft batches them and events arrive in bursts.
func (s *testServer) registerMany(service string, n int, meta string) {
	s.t.Helper()
	var wg sync.WaitGroup
	errs := make(chan string, n)
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := w; i < n; i += 8 {
				body := `{"addr":"10.1.` + strconv.Itoa(i/250) + `.` + strconv.Itoa(i%250) + `:80","proto":"http","meta":{"m":"` + meta + `"}}`
				req, _ := http.NewRequest("PUT", s.url+"/services/"+service+"/instances/i"+strconv.Itoa(i), strings.NewReader(body))
				resp, err := s.http.Do(req)
				if err != nil {
					errs <- err.Error()
					return
				}
				resp.Body.Close()
				if resp.StatusCode != 200 {
					errs <- resp.Status
					return
				}
			}
		}(w)
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		s.t.Fatalf("registering: %s", e)
	}
}

// TestStreamBurst checks that bursts of events (drained and written
// together) arrive complete, in order, once each.
func TestStreamBurst(t *testing.T) {
	s := newServer(t)
	s.must("PUT", "/services/web", "")
	st := s.stream("/services/web/instances", nil)
	st.skipPrelude()
	const n = 600
	s.registerMany("web", n, "x")
	seen := make(map[string]bool)
	var last uint64
	for len(seen) < n {
		e := st.next(5 * time.Second)
		if e.ev.Index < last || e.ev.Index == last && e.ev.Kind == api.EventUp {
			t.Fatalf("event %s after index %d (seen %d)", e.data, last, len(seen))
		}
		last = e.ev.Index
		if e.ev.Kind != api.EventUp || seen[e.ev.Instance.ID] {
			t.Fatalf("event %s (seen %d)", e.data, len(seen))
		}
		seen[e.ev.Instance.ID] = true
	}
}

// TestStreamSlowSubscriber checks that a client that stops reading is cut
// off with a final error event, not left to hold the node back.
func TestStreamSlowSubscriber(t *testing.T) {
	if testing.Short() {
		t.Skip("registers thousands of instances")
	}
	s := newServer(t)
	s.must("PUT", "/services/web", "")

	// A client with a tiny receive buffer that does not read.
	dialer := &net.Dialer{Control: func(network, address string, c syscall.RawConn) error {
		var serr error
		c.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
		return serr
	}}
	conn, err := dialer.Dial("tcp", s.n.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.Write([]byte("GET /services/web HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n"))

	meta := strings.Repeat("m", 2048)
	s.registerMany("web", 3000, meta)

	// Now read everything: the stream must end with an error event.
	conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	br := bufio.NewReaderSize(conn, 1<<20)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	ups := 0
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "data: ") && strings.Contains(line, `"kind":"up"`) {
			ups++
		}
		if line == "event: error" {
			if !sc.Scan() || !strings.HasPrefix(sc.Text(), "data: ") {
				t.Fatalf("error event without data")
			}
			var e api.Error
			if err := json.Unmarshal([]byte(strings.TrimPrefix(sc.Text(), "data: ")), &e); err != nil || e.Code != api.CodeUnavailable || !e.Retry {
				t.Fatalf("error event data %q (%v)", sc.Text(), err)
			}
			t.Logf("cut off after %d ups: %s", ups, e.Message)
			return
		}
	}
	t.Fatalf("stream ended without an error event after %d ups (%v)", ups, sc.Err())
}

// TestStreamClientGone checks that a stream whose client goes away is
// released.
func TestStreamClientGone(t *testing.T) {
	s := newServer(t)
	s.must("PUT", "/services/web", "")
	for i := 0; i < 20; i++ {
		st := s.stream("/services/web", nil)
		st.skipPrelude()
		st.close()
	}
	// The server still streams and serves.
	st := s.stream("/services/web", nil)
	st.skipPrelude()
	s.register("web", "a", "10.0.0.1:80", nil)
	st.expect(api.EventUp, "a")
}
