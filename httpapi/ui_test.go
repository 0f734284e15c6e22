package httpapi_test

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/discoverd/discoverd/api"
	"github.com/discoverd/discoverd/ui"
)

// summary reads the next event of the service list stream.
func (st *sseStream) summary(timeout time.Duration) api.ServiceSummary {
	st.t.Helper()
	e := st.next(timeout)
	var s api.ServiceSummary
	if err := json.Unmarshal([]byte(e.data), &s); err != nil {
		st.t.Fatalf("bad summary %s: %v", e.data, err)
	}
	switch s.Kind {
	case api.SummaryService, api.SummaryRemoved, api.SummaryCurrent:
	default:
		st.t.Fatalf("unknown summary kind in %s", e.data)
	}
	return s
}

// summaries reads the service list stream into seen (the last summary of
// each service; "" once the opening list ended) until cond holds, and
// returns how many events it read.
func (st *sseStream) summaries(what string, seen map[string]api.ServiceSummary, cond func(map[string]api.ServiceSummary) bool) int {
	st.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	n := 0
	for !cond(seen) {
		left := time.Until(deadline)
		if left <= 0 {
			st.t.Fatalf("waiting for %s: the stream sent %v", what, seen)
		}
		s := st.summary(left)
		n++
		switch s.Kind {
		case api.SummaryService:
			seen[s.Service] = s
		case api.SummaryRemoved:
			delete(seen, s.Service)
		case api.SummaryCurrent:
			seen[""] = s
		}
	}
	return n
}

func leaderID(s api.ServiceSummary) string {
	if s.Leader == nil {
		return ""
	}
	return s.Leader.ID
}

func TestServiceListStream(t *testing.T) {
	s := newServer(t)
	s.must("PUT", "/services/web", "")
	s.register("web", "w1", "10.0.0.1:80", nil)

	st := s.stream("/services", nil)
	seen := map[string]api.ServiceSummary{}
	st.summaries("the opening list", seen, func(m map[string]api.ServiceSummary) bool { _, ok := m[""]; return ok })
	if len(seen) != 3 || seen["web"].Instances != 1 || leaderID(seen["web"]) != "w1" || seen["warmup"].Instances != 0 || seen["warmup"].Leader != nil {
		t.Fatalf("opening list: %+v", seen)
	}

	s.register("web", "w2", "10.0.0.2:80", nil)
	st.summaries("web with 2 instances", seen, func(m map[string]api.ServiceSummary) bool { return m["web"].Instances == 2 })
	s.must("DELETE", "/services/web/instances/w1", "")
	st.summaries("web led by w2", seen, func(m map[string]api.ServiceSummary) bool {
		return m["web"].Instances == 1 && leaderID(m["web"]) == "w2"
	})
	s.must("PUT", "/services/empty", "")
	st.summaries("a new empty service", seen, func(m map[string]api.ServiceSummary) bool { _, ok := m["empty"]; return ok })
	s.must("DELETE", "/services/empty", "")
	st.summaries("the empty service removed", seen, func(m map[string]api.ServiceSummary) bool { _, ok := m["empty"]; return !ok })
	s.must("DELETE", "/services/web", "")
	st.summaries("web removed", seen, func(m map[string]api.ServiceSummary) bool { _, ok := m["web"]; return !ok })

	// A burst is coalesced: far fewer summaries than registrations.
	s.must("PUT", "/services/burst", "")
	st.summaries("the burst service", seen, func(m map[string]api.ServiceSummary) bool { _, ok := m["burst"]; return ok })
	const burst = 500
	s.registerMany("burst", burst, "")
	n := st.summaries("the burst registered", seen, func(m map[string]api.ServiceSummary) bool { return m["burst"].Instances == burst })
	if n >= burst/2 {
		t.Errorf("a burst of %d registrations sent %d summaries; want them coalesced", burst, n)
	}
}

func TestRootAndPage(t *testing.T) {
	s := newServer(t)
	noRedirect := &http.Client{
		Timeout:       10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	get := func(path, accept string) (*http.Response, string) {
		t.Helper()
		req, _ := http.NewRequest("GET", s.url+path, nil)
		if accept != "" {
			req.Header.Set("Accept", accept)
		}
		resp, err := noRedirect.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}

	// A browser asking for / is sent to the page.
	resp, _ := get("/", "text/html,application/xhtml+xml,*/*;q=0.8")
	if resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != ui.Prefix {
		t.Errorf("GET / for a browser: %s, Location %q; want 302 to %s", resp.Status, resp.Header.Get("Location"), ui.Prefix)
	}
	// An API client gets the JSON 404 of an unknown path.
	for _, accept := range []string{"", "application/json", "*/*"} {
		resp, body := get("/", accept)
		var e api.Error
		if resp.StatusCode != http.StatusNotFound || json.Unmarshal([]byte(body), &e) != nil || e.Code != api.CodeNotFound {
			t.Errorf("GET / with Accept %q: %s %s; want a JSON 404", accept, resp.Status, body)
		}
	}

	for _, tc := range []struct{ path, contentType, contains string }{
		{"/ui/", "text/html", "<title>discoverd</title>"},
		{"/ui/app.js", "text/javascript", "EventStream"},
		{"/ui/style.css", "text/css", ":root"},
	} {
		resp, body := get(tc.path, "")
		if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), tc.contentType) || !strings.Contains(body, tc.contains) {
			t.Errorf("GET %s: %s %q, body has %q: %v", tc.path, resp.Status, resp.Header.Get("Content-Type"), tc.contains, strings.Contains(body, tc.contains))
		}
		if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'self'") {
			t.Errorf("GET %s: Content-Security-Policy %q", tc.path, csp)
		}
	}
	if resp, _ := get("/ui", ""); resp.StatusCode/100 != 3 || resp.Header.Get("Location") != "/ui/" {
		t.Errorf("GET /ui: %s to %q; want a redirect to /ui/", resp.Status, resp.Header.Get("Location"))
	}
	if resp, body := get("/ui/nothing.js", ""); resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET /ui/nothing.js: %s %s", resp.Status, body)
	}

	// The cluster view: this node, leading, answering.
	resp, body := get("/ui/cluster", "")
	var view ui.ClusterView
	if err := json.Unmarshal([]byte(body), &view); err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET /ui/cluster: %s %s (%v)", resp.Status, body, err)
	}
	addr := strings.TrimPrefix(s.url, "http://")
	if view.Leader != addr || len(view.Nodes) != 1 || view.Nodes[0].Addr != addr || view.Nodes[0].Role != "leader" || !view.Nodes[0].Answers || !view.Nodes[0].Self {
		t.Errorf("GET /ui/cluster: %s", body)
	}
}

// TestServiceListStreamEnds checks that the node's EndStreams, which runs
// before its HTTP server shuts down, ends the service list stream too, with
// an error event, so that an open page does not hold the shutdown.
func TestServiceListStreamEnds(t *testing.T) {
	s := newServer(t)
	st := s.stream("/services", nil)
	st.summaries("the opening list", map[string]api.ServiceSummary{}, func(m map[string]api.ServiceSummary) bool { _, ok := m[""]; return ok })
	s.n.EndStreams()
	deadline := time.After(10 * time.Second)
	sawError := false
	for {
		select {
		case e, ok := <-st.events:
			if !ok {
				if !sawError {
					t.Error("the stream ended without an error event")
				}
				return
			}
			if e.name == "error" {
				sawError = true
			}
		case <-deadline:
			t.Fatal("the service list stream is still open 10s after EndStreams")
		}
	}
}
