package httpapi_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/discoverd/discoverd/api"
	"github.com/discoverd/discoverd/auth"
	"github.com/discoverd/discoverd/httpapi"
	"github.com/discoverd/discoverd/node"
)

const authFile = `{"tokens": [
  {"name": "ops",  "secret": "secret-admin", "role": "admin"},
  {"name": "web",  "secret": "secret-web",   "role": "service", "services": ["web", "web-*"]},
  {"name": "db",   "secret": "secret-db",    "role": "service", "services": ["db"]},
  {"name": "dash", "secret": "secret-read",  "role": "read"}
]}`

type authServer struct {
	url, authPath string
	store         *auth.Store
	handler       http.Handler
	client        *http.Client
}

// startAuthServer runs a real single node with the tokens of authFile.
func startAuthServer(t *testing.T) *authServer {
	t.Helper()
	path := filepath.Join(t.TempDir(), "auth.json")
	if err := os.WriteFile(path, []byte(authFile), 0o600); err != nil {
		t.Fatal(err)
	}
	store, err := auth.Open(path, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	n, err := node.New(node.Config{DataDir: t.TempDir(), Addr: "127.0.0.1:0", InstanceTTL: stableTTL, Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	h := httpapi.New(n, httpapi.Options{Auth: store, KeepAlive: testKeepAlive})
	srv := httpapi.NewServer(h, httpapi.ServerOptions{})
	go srv.Serve(n.HTTPListener())
	tr := &http.Transport{}
	t.Cleanup(func() {
		tr.CloseIdleConnections()
		n.EndStreams()
		srv.Close()
		n.Close()
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := n.WaitLeader(ctx); err != nil {
		t.Fatal(err)
	}
	return &authServer{url: "http://" + n.Addr(), authPath: path, store: store, handler: h, client: &http.Client{Transport: tr, Timeout: 10 * time.Second}}
}

func (s *authServer) send(t *testing.T, method, path, secret, body string, header map[string]string) (int, api.Error, *http.Response) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, _ := http.NewRequest(method, s.url+path, rd)
	if secret != "" {
		req.Header.Set("Authorization", "Bearer "+secret)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := s.client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	var e api.Error
	if resp.StatusCode >= 400 {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		_ = json.Unmarshal(b, &e)
	}
	return resp.StatusCode, e, resp
}

// as sends a request as an admin and requires one of the statuses.
func (s *authServer) as(t *testing.T, method, path, body string, want ...int) {
	t.Helper()
	status, e, resp := s.send(t, method, path, "secret-admin", body, nil)
	if resp.StatusCode < 400 {
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	for _, w := range want {
		if status == w {
			return
		}
	}
	t.Fatalf("setup %s %s: %d %+v", method, path, status, e)
}

// TestRouteRoleTable sends every route of the table as every kind of
// caller and checks 401, 403 or the route's own answer, as DESIGN.md's
// "Security" says. A route the table below does not list fails the test,
// so a new route cannot go in without a permission checked here.
func TestRouteRoleTable(t *testing.T) {
	s := startAuthServer(t)
	type routeCase struct {
		perm    string // open, read, service, admin, node
		body    string
		stream  bool
		allowed int // the route's answer once the caller may call it
	}
	routes := map[string]routeCase{
		"GET /services":                             {perm: "read", allowed: 200},
		"PUT /services/{service}":                   {perm: "service", body: `{}`, allowed: 409},
		"DELETE /services/{service}":                {perm: "service", allowed: 200},
		"GET /services/{service}":                   {perm: "read", stream: true, allowed: 200},
		"GET /services/{service}/instances":         {perm: "read", allowed: 200},
		"PUT /services/{service}/instances/{id}":    {perm: "service", body: `{"addr": "10.0.0.1:80", "proto": "http"}`, allowed: 200},
		"DELETE /services/{service}/instances/{id}": {perm: "service", allowed: 200},
		"GET /services/{service}/leader":            {perm: "read", allowed: 200},
		"PUT /services/{service}/leader":            {perm: "service", body: `{"id": "i1"}`, allowed: 200},
		"GET /services/{service}/meta":              {perm: "read", allowed: 200},
		"PUT /services/{service}/meta":              {perm: "service", body: `{"data": 2, "index": 0}`, allowed: 409},
		"GET /ping":                                 {perm: "open", allowed: 200},
		"GET /.well-known/status":                   {perm: "open", allowed: 200},
		"GET /metrics":                              {perm: "read", allowed: 200},
		"POST /raft/apply":                          {perm: "node", allowed: 200},
		"POST /raft/apply-batch":                    {perm: "node", allowed: 400},
		"GET /raft/nodes":                           {perm: "read", allowed: 200},
		"GET /raft/leader":                          {perm: "read", allowed: 200},
		"GET /raft/peers":                           {perm: "read", allowed: 200},
		"PUT /raft/peers/{addr}":                    {perm: "admin", allowed: 400},
		"DELETE /raft/peers/{addr}":                 {perm: "admin", allowed: 400},
		"POST /raft/promote":                        {perm: "admin", allowed: 400},
		"POST /raft/demote":                         {perm: "admin", allowed: 400},
		"GET /{$}":                                  {perm: "open", allowed: 404},
		"GET /ui/":                                  {perm: "open", allowed: 200},
		"GET /ui/cluster":                           {perm: "read", allowed: 200},
		"GET /raft/snapshot":                        {perm: "admin", allowed: 200},
		"PUT /raft/snapshot":                        {perm: "admin", body: "not a snapshot", allowed: 400},
	}
	callers := []struct{ name, secret string }{
		{"none", ""},
		{"unknown", "secret-nobody"},
		{"read", "secret-read"},
		{"service-own", "secret-web"},
		{"service-other", "secret-db"},
		{"admin", "secret-admin"},
	}
	mayCall := func(caller, perm string) bool {
		switch caller {
		case "none", "unknown":
			return perm == "open"
		case "read", "service-other":
			return perm == "open" || perm == "read"
		case "service-own":
			return perm == "open" || perm == "read" || perm == "service"
		}
		return true
	}

	listed := map[string]bool{}
	for _, r := range httpapi.RoutesOf(s.handler) {
		key := r.Method + " " + r.Path
		listed[key] = true
		if _, ok := routes[key]; !ok {
			t.Errorf("route %s (permission %s) is not in this test's table: add it with the permission DESIGN.md gives it", key, r.Perm)
		}
	}
	for key := range routes {
		if !listed[key] {
			t.Errorf("the table lists %s, which the API does not serve", key)
		}
	}

	n := 0
	for key, rc := range routes {
		for _, c := range callers {
			t.Run(key+"/"+c.name, func(t *testing.T) {
				n++
				service := fmt.Sprintf("web-%d", n)
				s.as(t, "PUT", "/services/"+service, `{"leader_type": "manual"}`, 200)
				s.as(t, "PUT", "/services/"+service+"/instances/i1", `{"addr": "10.0.0.1:80", "proto": "http"}`, 200)
				s.as(t, "PUT", "/services/"+service+"/leader", `{"id": "i1"}`, 200)
				s.as(t, "PUT", "/services/"+service+"/meta", `{"data": 1, "index": 0}`, 200)
				method, path, _ := strings.Cut(key, " ")
				path = strings.NewReplacer("{service}", service, "{id}", "i1", "{addr}", "bad", "{$}", "").Replace(path)
				status, e, resp := s.send(t, method, path, c.secret, rc.body, nil)
				if status < 400 {
					resp.Body.Close()
				}
				want, wantCode := rc.allowed, api.ErrorCode("")
				switch {
				case mayCall(c.name, rc.perm):
				case c.name == "none" || c.name == "unknown":
					want, wantCode = 401, api.CodeUnauthorized
				default:
					want, wantCode = 403, api.CodeForbidden
				}
				if status != want || (wantCode != "" && e.Code != wantCode) {
					t.Errorf("%s %s as %s: %d %q (%s), want %d %s", method, path, c.name, status, e.Code, e.Message, want, wantCode)
				}
				if strings.Contains(e.Message, "secret-") {
					t.Errorf("error message %q shows a secret", e.Message)
				}
			})
		}
	}
}

// openStream opens an SSE stream with secret and returns its reader.
func (s *authServer) openStream(t *testing.T, service, secret string) (*bufio.Reader, func()) {
	t.Helper()
	status, e, resp := s.send(t, "GET", "/services/"+service, secret, "", map[string]string{"Accept": "text/event-stream"})
	if status != 200 {
		t.Fatalf("stream: %d %+v", status, e)
	}
	return bufio.NewReader(resp.Body), func() { resp.Body.Close() }
}

func TestAuthReload(t *testing.T) {
	s := startAuthServer(t)
	s.as(t, "PUT", "/services/web", `{}`, 200)
	status := func(secret string) int {
		st, _, resp := s.send(t, "GET", "/services", secret, "", nil)
		if st < 400 {
			resp.Body.Close()
		}
		return st
	}
	if got := status("secret-new"); got != 401 {
		t.Fatalf("a token not yet in the file: %d", got)
	}
	stream, closeStream := s.openStream(t, "web", "secret-web")
	defer closeStream()
	kept, closeKept := s.openStream(t, "web", "secret-read")
	defer closeKept()

	// A broken file keeps the tokens in force.
	os.WriteFile(s.authPath, []byte(`{"tokens": [{"name": "ops"`), 0o600)
	if err := s.store.Reload(); err == nil {
		t.Fatal("a broken auth file was accepted")
	}
	if got := status("secret-web"); got != 200 {
		t.Fatalf("after a refused reload, a token in force answers %d", got)
	}

	// Add a token, remove "web".
	next := strings.Replace(authFile, `{"name": "web",  "secret": "secret-web",   "role": "service", "services": ["web", "web-*"]},`,
		`{"name": "new", "secret": "secret-new", "role": "read"},`, 1)
	os.WriteFile(s.authPath, []byte(next), 0o600)
	if err := s.store.Reload(); err != nil {
		t.Fatal(err)
	}
	if got := status("secret-new"); got != 200 {
		t.Errorf("an added token answers %d", got)
	}
	if got := status("secret-web"); got != 401 {
		t.Errorf("a removed token answers %d", got)
	}
	// The removed token's stream ends; the other one stays open.
	done := make(chan error, 1)
	go func() {
		_, err := io.Copy(io.Discard, stream)
		done <- err
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the stream of a removed token is still open 10s after the reload")
	}
	// The kept stream still delivers: a new instance shows up on it.
	s.as(t, "PUT", "/services/web/instances/i9", `{"addr": "10.0.0.9:80", "proto": "http"}`, 200)
	deadline := time.Now().Add(10 * time.Second)
	for {
		line, err := kept.ReadString('\n')
		if err != nil {
			t.Fatalf("the stream of a kept token ended: %v", err)
		}
		if strings.Contains(line, `"i9"`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the kept stream did not deliver the new instance")
		}
	}
}
