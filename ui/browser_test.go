package ui_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/discoverd/discoverd/api"
	"github.com/discoverd/discoverd/httpapi"
	"github.com/discoverd/discoverd/internal/browsertest"
	"github.com/discoverd/discoverd/internal/testnode"
	"github.com/discoverd/discoverd/ui"
)

// screenshots is where the tests save what the page looked like; it is
// git-ignored.
const screenshots = "screenshots"

// registry is a plain HTTP client of the node under test: the browser test
// changes the registry through the API, as any client would.
type registry struct {
	t    testing.TB
	base string
}

// do sends a request and fails the test unless it is answered 200. A 503
// (the node settling after a start) is retried for a while.
func (r registry) do(method, path string, body any) []byte {
	r.t.Helper()
	deadline := time.Now().Add(browsertest.Wait)
	for {
		var rd io.Reader
		if body != nil {
			b, _ := json.Marshal(body)
			rd = bytes.NewReader(b)
		}
		req, err := http.NewRequest(method, r.base+path, rd)
		if err != nil {
			r.t.Fatal(err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return b
			}
			err = fmt.Errorf("%s: %s", resp.Status, b)
			if resp.StatusCode != http.StatusServiceUnavailable {
				r.t.Fatalf("%s %s: %v", method, path, err)
			}
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("%s %s: %v", method, path, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (r registry) register(service, id, addr string, meta map[string]string) {
	r.t.Helper()
	r.do("PUT", "/services/"+service+"/instances/"+id, api.Instance{Addr: addr, Proto: "http", Meta: meta})
}

func (r registry) setMeta(service string, data any, index uint64) uint64 {
	r.t.Helper()
	raw, _ := json.Marshal(data)
	var m api.ServiceMeta
	if err := json.Unmarshal(r.do("PUT", "/services/"+service+"/meta", api.ServiceMeta{Data: raw, Index: index}), &m); err != nil {
		r.t.Fatal(err)
	}
	return m.Index
}

// JavaScript conditions on the page's DOM.
func row(id string) string {
	return `document.querySelector('#instances-body tr[data-id="' + ` + browsertest.Quote(id) + ` + '"]')`
}

func leaderIs(id string) string {
	return `(() => { const rows = document.querySelectorAll('#instances-body tr.leader');
		return rows.length === 1 && rows[0].dataset.id === ` + browsertest.Quote(id) + ` && rows[0].querySelector('.badge').textContent === 'leader'; })()`
}

func connIs(state string) string {
	return `document.getElementById('conn').dataset.state === ` + browsertest.Quote(state)
}

// TestBrowserLive follows a service in a real browser while it changes:
// the list, a service's instances and leader, registrations, leader changes,
// meta changes, a node restart, with no reload and no JavaScript error.
func TestBrowserLive(t *testing.T) {
	srv := testnode.Start(t, testnode.Options{TTL: 10 * time.Minute})
	reg := registry{t, srv.URL()}
	reg.do("PUT", "/services/web", nil)
	reg.do("PUT", "/services/db", nil)
	reg.register("web", "web-1", "10.0.0.1:8080", map[string]string{"zone": "a"})
	reg.register("web", "web-2", "10.0.0.2:8080", nil)
	reg.register("db", "db-1", "10.0.1.1:5432", nil)

	b := browsertest.New(t, 1400, 900)
	b.Navigate(srv.URL() + "/ui/")

	// The service list shows the services, their counts and leaders.
	b.WaitFor("the service list to show web and db",
		`document.querySelector('#services-body tr[data-service="web"]') && document.querySelector('#services-body tr[data-service="db"]')`, 0)
	b.WaitFor("web to show 2 instances led by web-1",
		`document.querySelector('#services-body tr[data-service="web"]').innerText.includes('2') &&
		 document.querySelector('#services-body tr[data-service="web"]').innerText.includes('web-1 (10.0.0.1:8080)')`, 0)
	// A reload would clear this mark: it must survive every change below.
	b.MustEval(`window.__notReloaded = true`, nil)

	// A service created while the page is open appears in the list.
	reg.do("PUT", "/services/cache", nil)
	b.WaitFor("a new service to appear in the list", `document.querySelector('#services-body tr[data-service="cache"]')`, 0)
	// The filter narrows the list.
	b.Click("#services-filter")
	b.Keys("we")
	b.WaitFor("the filter to leave web alone", `document.querySelectorAll('#services-body tr').length === 1 && document.querySelector('#services-body tr[data-service="web"]')`, 0)
	b.MustEval(`document.getElementById('services-filter').value = ''; document.getElementById('services-filter').dispatchEvent(new Event('input'))`, nil)
	b.WaitFor("the cleared filter to show every service", `document.querySelectorAll('#services-body tr').length === 3`, 0)
	b.Screenshot(screenshots, "services-1400.png")

	// Clicking a service shows its instances and marks the leader.
	b.Click(`#services-body tr[data-service="web"] a`)
	b.WaitFor("web's instances", row("web-1")+` && `+row("web-2"), 0)
	b.WaitFor("web-1 marked as the leader", leaderIs("web-1"), 0)
	b.WaitFor("web-1's meta in its row", row("web-1")+`.innerText.includes('zone=a')`, 0)
	b.WaitFor("the empty meta state", `!document.getElementById('meta-empty').hidden && document.getElementById('meta-empty').innerText.includes('no meta')`, 0)

	// Registering makes the instance appear without a reload.
	reg.register("web", "web-3", "10.0.0.3:8080", nil)
	b.WaitFor("web-3 to appear", row("web-3"), 0)
	// Deregistering the leader removes it and moves the mark.
	reg.do("DELETE", "/services/web/instances/web-1", nil)
	b.WaitFor("web-1 to disappear", `!`+row("web-1"), 0)
	b.WaitFor("the leader mark to move to web-2", leaderIs("web-2"), 0)
	// A change of an instance's meta shows.
	reg.register("web", "web-2", "10.0.0.2:8080", map[string]string{"version": "2"})
	b.WaitFor("web-2's new meta", row("web-2")+`.innerText.includes('version=2')`, 0)
	// A change of the service's meta shows, pretty-printed.
	idx := reg.setMeta("web", map[string]any{"owner": "team-a", "limits": map[string]int{"rps": 100}}, 0)
	b.WaitFor("the service meta", `document.getElementById('meta').textContent.includes('"owner": "team-a"')`, 0)
	reg.setMeta("web", map[string]any{"owner": "team-b"}, idx)
	b.WaitFor("the changed service meta", `document.getElementById('meta').textContent.includes('"owner": "team-b"')`, 0)
	// The feed lists what happened, newest first.
	b.WaitFor("the events feed", `['up', 'down', 'leader', 'update', 'service_meta'].every(k => document.querySelector('#events-body tr[data-kind="' + k + '"]'))`, 0)
	var firstKind string
	b.MustEval(`document.querySelector('#events-body tr').dataset.kind`, &firstKind)
	if firstKind != "service_meta" {
		t.Errorf("the newest event in the feed is %q, want service_meta", firstKind)
	}

	// The keyboard: "/" goes to the filter, which narrows the instances.
	b.MustEval(`document.activeElement && document.activeElement.blur()`, nil)
	b.Keys("/")
	b.WaitFor("/ to focus the instance filter", `document.activeElement.id === 'instances-filter'`, 0)
	b.WaitFor("the / not to be typed into the filter", `document.getElementById('instances-filter').value === ''`, 0)
	b.Keys("web-3")
	b.WaitFor("the filter to leave web-3 alone", `document.querySelectorAll('#instances-body tr').length === 1 && `+row("web-3"), 0)
	b.MustEval(`document.getElementById('instances-filter').value = ''; document.getElementById('instances-filter').dispatchEvent(new Event('input'))`, nil)
	b.WaitFor("the cleared filter", `document.querySelectorAll('#instances-body tr').length === 2`, 0)
	b.Screenshot(screenshots, "service-1400.png")

	// At 800 px the page fits the width: nothing scrolls sideways.
	b.Resize(800, 1000)
	b.WaitFor("the page to fit 800 px", `document.documentElement.scrollWidth <= 800`, 0)
	b.Screenshot(screenshots, "service-800.png")
	b.Resize(1400, 900)

	// Killing the node shows "reconnecting"; once it is back, the page
	// resumes and catches up with what changed.
	srv.Stop()
	b.WaitFor(`"reconnecting" while the node is down`, connIs("reconnecting")+` && document.getElementById('conn').textContent.includes('reconnecting')`, 0)
	b.Screenshot(screenshots, "service-reconnecting.png")
	srv.Restart()
	reg.register("web", "web-4", "10.0.0.4:8080", nil)
	reg.do("DELETE", "/services/web/instances/web-3", nil)
	b.WaitFor("web-4 to appear after the restart", row("web-4"), 0)
	b.WaitFor("web-3 to disappear after the restart", `!`+row("web-3"), 0)
	b.WaitFor("the page to be live again", connIs("live"), 0)
	b.WaitFor("web-2 to still lead", leaderIs("web-2"), 0)

	var notReloaded bool
	b.MustEval(`window.__notReloaded === true`, &notReloaded)
	if !notReloaded {
		t.Error("the page was reloaded: it must update in place")
	}
	b.NoConsoleErrors()
}

// TestBrowserEmptyStates checks what a new user sees: a registry with no
// services and a service with no instances say what to do next.
func TestBrowserEmptyStates(t *testing.T) {
	srv := testnode.Start(t, testnode.Options{TTL: 10 * time.Minute})
	b := browsertest.New(t, 1400, 900)
	// A browser asking for / is sent to the page.
	b.Navigate(srv.URL() + "/")
	b.WaitFor("the redirect to /ui/", `location.pathname === '/ui/'`, 0)
	b.WaitFor("the empty service list to say how to register one",
		`!document.getElementById('services-empty').hidden && document.getElementById('services-empty').innerText.includes('No services yet') &&
		 document.getElementById('services-empty').innerText.includes('curl -X PUT http://' + location.host + '/services/web')`, 0)
	b.Screenshot(screenshots, "services-empty.png")

	registry{t, srv.URL()}.do("PUT", "/services/api", nil)
	b.WaitFor("the new service", `document.querySelector('#services-body tr[data-service="api"]')`, 0)
	b.Click(`#services-body tr[data-service="api"] a`)
	b.WaitFor("the empty instance list to say how to register one",
		`!document.getElementById('instances-empty').hidden && document.getElementById('instances-empty').innerText.includes('/services/api/instances/')`, 0)
	b.WaitFor("the empty feed", `!document.getElementById('events-empty').hidden`, 0)

	// The cluster view shows this node, leading, answering.
	b.Click(`#nav-cluster`)
	b.WaitFor("this node in the cluster view",
		`(() => { const r = document.querySelector('#cluster-body tr[data-addr=`+browsertest.Quote(srv.Addr())+`]');
		  return r && r.innerText.includes('leader') && r.innerText.includes('yes') && r.innerText.includes('this node'); })()`, 0)
	b.NoConsoleErrors()
}

// TestBrowserLargeService loads a service of 100,000 instances: the page
// shows its first rows and the count, filters and pages through it, takes
// a burst of registrations in batches, and stays responsive throughout.
func TestBrowserLargeService(t *testing.T) {
	const total = 100_000
	srv := testnode.Start(t, testnode.Options{TTL: time.Hour})
	reg := registry{t, srv.URL()}
	reg.do("PUT", "/services/big", nil)

	// Registered through the node, not HTTP: the test is about the page.
	start := time.Now()
	if err := registerMany(srv, "big", 0, total); err != nil {
		t.Fatal(err)
	}
	t.Logf("registered %d instances in %v", total, time.Since(start).Round(time.Millisecond))

	b := browsertest.New(t, 1400, 900)
	opened := time.Now()
	b.Navigate(srv.URL() + "/ui/#/services/big")
	b.ResetSlowest()
	b.WaitFor("the first page of rows and the count",
		`document.querySelectorAll('#instances-body tr').length === 100 &&
		 document.getElementById('instances-count').textContent.startsWith('100,000 instances')`, 3*time.Minute)
	t.Logf("100,000-instance service: first page and count shown %v after the browser was sent to the page", time.Since(opened).Round(time.Millisecond))
	// The page was polled every 50 ms while it loaded: its slowest answer
	// says how long its main thread was busy at a stretch. Ten seconds is a
	// frozen page even on a loaded machine.
	t.Logf("the slowest script round trip while the page loaded took %v", b.Slowest().Round(time.Millisecond))
	if b.Slowest() > 10*time.Second {
		t.Errorf("the page kept a script waiting %v while it loaded: it froze", b.Slowest())
	}
	b.WaitFor("the oldest instance, on top, marked as the leader",
		`document.querySelector('#instances-body tr').classList.contains('leader') && document.querySelectorAll('#instances-body tr.leader').length === 1`, 0)
	b.Screenshot(screenshots, "service-100k.png")

	// The page answers at once: a round trip to its main thread.
	rt := time.Now()
	b.MustEval(`1`, nil)
	t.Logf("a script round trip took %v after the load", time.Since(rt).Round(time.Millisecond))

	// Filter and page.
	b.Click("#instances-filter")
	b.Keys("big-099999")
	took := b.WaitFor("the filter to find one instance of 100,000",
		`document.querySelectorAll('#instances-body tr').length === 1 && `+row("big-099999"), time.Minute)
	t.Logf("filtering 100,000 instances down to one took %v", took.Round(time.Millisecond))
	b.MustEval(`document.getElementById('instances-filter').value = ''; document.getElementById('instances-filter').dispatchEvent(new Event('input'))`, nil)
	b.WaitFor("the cleared filter", `document.querySelectorAll('#instances-body tr').length === 100`, time.Minute)
	b.Click("#page-next")
	b.WaitFor("the second page", `document.getElementById('page-info').textContent === 'page 2 of 1,000' &&
		document.querySelectorAll('#instances-body tr').length === 100 && !document.querySelector('#instances-body tr.leader')`, time.Minute)

	// A burst of registrations arrives in batches; the page keeps up.
	burst := make(chan error, 1)
	go func() { burst <- registerMany(srv, "big", total, 2000) }()
	// While the burst lands, the page keeps answering.
	b.ResetSlowest()
	b.WaitFor("the count after the burst", `document.getElementById('instances-count').textContent.startsWith('102,000 instances')`, time.Minute)
	if err := <-burst; err != nil {
		t.Fatal(err)
	}
	t.Logf("the slowest script round trip during a burst of 2,000 registrations took %v", b.Slowest().Round(time.Millisecond))
	if b.Slowest() > 10*time.Second {
		t.Errorf("the page kept a script waiting %v during a burst of registrations: it froze", b.Slowest())
	}

	// The service list shows the count too.
	b.Click(`.crumbs a`)
	b.WaitFor("the list to count 102,000 instances",
		`document.querySelector('#services-body tr[data-service="big"]') && document.querySelector('#services-body tr[data-service="big"]').innerText.includes('102,000')`, time.Minute)
	b.NoConsoleErrors()
}

// registerMany registers instances big-<from> … big-<from+n-1> through the
// node, from a few goroutines so that Raft batches them.
func registerMany(srv *testnode.Server, service string, from, n int) error {
	n0 := srv.Node()
	const workers = 32
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := from + w; i < from+n; i += workers {
				inst := &api.Instance{ID: fmt.Sprintf("%s-%06d", service, i), Addr: fmt.Sprintf("10.%d.%d.%d:80", i>>16, (i>>8)&255, i&255), Proto: "http"}
				if err := api.PrepareInstance(inst, inst.ID); err != nil {
					errs <- err
					return
				}
				var err error
				for try := 0; try < 50; try++ {
					if _, err = n0.Heartbeat(context.Background(), service, inst); err == nil || !api.IsCode(err, api.CodeUnavailable) {
						break
					}
					time.Sleep(20 * time.Millisecond)
				}
				if err != nil {
					errs <- fmt.Errorf("registering %s: %w", inst.ID, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	return <-errs
}

// TestBrowserToken checks the page's seam for authentication against a
// front that asks for a bearer token on every API request, as the server
// does with auth on: the page asks for the token, keeps it for the tab, and
// sends it on every request, streams included.
func TestBrowserToken(t *testing.T) {
	const secret = "s3cr3t-dash"
	srv := testnode.Start(t, testnode.Options{TTL: 10 * time.Minute})
	reg := registry{t, srv.URL()}
	reg.do("PUT", "/services/web", nil)
	reg.register("web", "web-1", "10.0.0.1:8080", nil)

	apiHandler := httpapi.New(srv.Node(), httpapi.Options{})
	var mu sync.Mutex
	var refused []string
	front := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// The page's files hold no data: a browser loads them without a token.
		if strings.HasPrefix(r.URL.Path, ui.Prefix) && r.URL.Path != ui.ClusterPath {
			apiHandler.ServeHTTP(w, r)
			return
		}
		if r.Header.Get("Authorization") != "Bearer "+secret {
			mu.Lock()
			refused = append(refused, r.Method+" "+r.URL.Path)
			mu.Unlock()
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			io.WriteString(w, `{"code": "unauthorized", "message": "a token is required", "retry": false}`)
			return
		}
		apiHandler.ServeHTTP(w, r)
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: front}
	go hs.Serve(ln)
	t.Cleanup(func() { srv.Node().EndStreams(); hs.Close() })
	base := "http://" + ln.Addr().String()

	b := browsertest.New(t, 1400, 900)
	b.Navigate(base + "/ui/")
	b.WaitFor("the page to ask for a token", `document.getElementById('token-note').textContent.includes('asks for a token') && document.activeElement.id === 'token'`, 0)
	b.Keys(secret)
	b.Click(`#token-form button[type="submit"]`)
	b.WaitFor("the service list, read with the token", `document.querySelector('#services-body tr[data-service="web"]')`, 0)
	var kept string
	b.MustEval(`sessionStorage.getItem('discoverd.token')`, &kept)
	if kept != secret {
		t.Errorf("sessionStorage holds %q, want the token", kept)
	}
	mu.Lock()
	refused = nil
	mu.Unlock()
	b.Click(`#services-body tr[data-service="web"] a`)
	b.WaitFor("the instances, streamed with the token", row("web-1"), 0)
	reg.register("web", "web-2", "10.0.0.2:8080", nil)
	b.WaitFor("a live registration", row("web-2"), 0)
	b.Click("#nav-cluster")
	b.WaitFor("the cluster view, read with the token", `document.querySelector('#cluster-body tr')`, 0)
	mu.Lock()
	if len(refused) > 0 {
		t.Errorf("requests sent without the token once it was given: %v", refused)
	}
	mu.Unlock()
	b.NoConsoleErrors()
}
