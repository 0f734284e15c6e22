package integration

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/discoverd/discoverd/api"
)

var httpc = &http.Client{Timeout: 10 * time.Second}

// suiteClient and suiteToken, while set, make every helper request go over
// HTTPS with a bearer token (the cluster suite over mutual TLS).
var (
	suiteClient *http.Client
	suiteToken  string
)

func helperClient() *http.Client {
	if suiteClient != nil {
		return suiteClient
	}
	return httpc
}

func authorize(req *http.Request) {
	if suiteToken != "" {
		req.Header.Set("Authorization", "Bearer "+suiteToken)
	}
}

// do sends a request and returns the status and body.
func do(t testing.TB, method, url string, body any) (int, []byte) {
	t.Helper()
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		r = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, url, r)
	if err != nil {
		t.Fatal(err)
	}
	authorize(req)
	resp, err := helperClient().Do(req)
	if err != nil {
		return 0, []byte(err.Error())
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// mustDo is do that fails the test unless the answer is 200. Like any
// client, it retries an answer marked retryable (a 503 while a leader is
// being elected) for a few seconds.
func mustDo(t testing.TB, method, url string, body any) []byte {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		code, b := do(t, method, url, body)
		if code == http.StatusOK {
			return b
		}
		var e api.Error
		if code == http.StatusServiceUnavailable && json.Unmarshal(b, &e) == nil && e.Retry && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
			continue
		}
		t.Fatalf("%s %s: %d %s", method, url, code, b)
	}
}

func register(t testing.TB, base, service, id, addr string) (int, []byte) {
	return do(t, "PUT", base+"/services/"+service+"/instances/"+id, api.Instance{Addr: addr, Proto: "http"})
}

func instances(t testing.TB, base, service string) []*api.Instance {
	t.Helper()
	var out []*api.Instance
	if err := json.Unmarshal(mustDo(t, "GET", base+"/services/"+service+"/instances", nil), &out); err != nil {
		t.Fatal(err)
	}
	return out
}

func ids(insts []*api.Instance) string {
	var s []string
	for _, i := range insts {
		s = append(s, i.ID)
	}
	return strings.Join(s, ",")
}

// sse is an open event stream.
type sse struct {
	resp   *http.Response
	events chan api.Event
}

func openSSE(t testing.TB, url string) *sse {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	req.Header.Set("Accept", "text/event-stream")
	authorize(req)
	sc := &http.Client{}
	if suiteClient != nil {
		sc.Transport = suiteClient.Transport
	}
	resp, err := sc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("GET %s: %d %s", url, resp.StatusCode, b)
	}
	s := &sse{resp: resp, events: make(chan api.Event, 1024)}
	go func() {
		defer close(s.events)
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			line := sc.Text()
			if data, ok := strings.CutPrefix(line, "data: "); ok {
				var ev api.Event
				if json.Unmarshal([]byte(data), &ev) == nil {
					s.events <- ev
				}
			}
		}
	}()
	t.Cleanup(func() { resp.Body.Close() })
	return s
}

// next returns the next event, failing the test after timeout.
func (s *sse) next(t testing.TB, timeout time.Duration) api.Event {
	t.Helper()
	select {
	case ev, ok := <-s.events:
		if !ok {
			t.Fatal("event stream ended")
		}
		return ev
	case <-time.After(timeout):
		t.Fatalf("no event within %v", timeout)
	}
	return api.Event{}
}

// waitEvent skips events until one matches, failing after timeout.
func (s *sse) waitEvent(t testing.TB, timeout time.Duration, match func(api.Event) bool) api.Event {
	t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case ev, ok := <-s.events:
			if !ok {
				t.Fatal("event stream ended")
			}
			if match(ev) {
				return ev
			}
		case <-deadline:
			t.Fatalf("no matching event within %v", timeout)
		}
	}
}
