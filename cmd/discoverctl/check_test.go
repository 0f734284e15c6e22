package main

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/discoverd/discoverd/client"
)

const (
	interval = 200 * time.Millisecond
	// busySlack is what a loaded machine may add to a bound measured in
	// check intervals: scheduling, the Raft apply and the output.
	busySlack = 3 * time.Second
)

// buildCtl builds the discoverctl binary into a temporary dir.
func buildCtl(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "discoverctl")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// lineReader hands out a process's stdout line by line, with a deadline.
type lineReader struct {
	lines chan string
}

func newLineReader(r io.Reader) *lineReader {
	lr := &lineReader{lines: make(chan string, 64)}
	go func() {
		defer close(lr.lines)
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			lr.lines <- sc.Text()
		}
	}()
	return lr
}

func (lr *lineReader) next(t *testing.T) string {
	t.Helper()
	select {
	case l, ok := <-lr.lines:
		if !ok {
			t.Fatal("stdout ended")
		}
		return l
	case <-time.After(15 * time.Second):
		t.Fatal("no line within 15s")
	}
	return ""
}

// TestRegisterCheckHTTPBinary runs the built binary's register
// --check-http against a real node and an endpoint that flips between 200
// and 500, and reads each state change line.
func TestRegisterCheckHTTPBinary(t *testing.T) {
	bin := buildCtl(t)
	addr := startServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c := client.New(addr)
	defer c.Close()
	ok(t, addr, "add-service", "web")

	var healthy atomic.Bool
	healthy.Store(true)
	app := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, _ *http.Request) {
		if !healthy.Load() {
			rw.WriteHeader(http.StatusInternalServerError)
		}
	}))
	defer app.Close()

	for _, tc := range []struct {
		name string
		json bool
	}{{"table", false}, {"json", true}} {
		t.Run(tc.name, func(t *testing.T) {
			healthy.Store(true)
			args := []string{"--server", addr, "register", "web", "10.0.0.1:80", "--id", "web-1",
				"--check-http", app.URL + "/health", "--check-interval", interval.String(), "--check-timeout", "1s"}
			if tc.json {
				args = append(args, "--json")
			}
			cmd := exec.CommandContext(ctx, bin, args...)
			stdout, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			var stderr strings.Builder
			cmd.Stderr = &stderr
			started := time.Now()
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			defer cmd.Process.Kill()
			lines := newLineReader(stdout)

			// want reads the next line and checks it is the change to
			// status, then checks the instances the server lists.
			want := func(status client.CheckStatus, text, errText string, registered bool, since time.Time, bound time.Duration) {
				t.Helper()
				l := lines.next(t)
				if took := time.Since(since); took > bound+busySlack {
					t.Fatalf("%q took %v, bound %v (+%v for a busy machine)", l, took, bound, busySlack)
				}
				if tc.json {
					var cl checkLine
					if err := json.Unmarshal([]byte(l), &cl); err != nil || cl.Status != status || !strings.Contains(cl.Error, errText) ||
						cl.Instance == nil || cl.Instance.ID != "web-1" || (registered && cl.Instance.Index == 0) {
						t.Fatalf("line %q, want status %s with %q (%v)", l, status, text, err)
					}
				} else if !strings.HasPrefix(l, string(status)+": ") || !strings.Contains(l, text) {
					t.Fatalf("line %q, want %s: ...%s...", l, status, text)
				}
				insts, err := c.Instances(ctx, "web")
				if err != nil || (len(insts) == 1) != registered {
					t.Fatalf("instances after %q = %v, %v", l, insts, err)
				}
			}

			if !tc.json {
				if l := lines.next(t); !strings.HasPrefix(l, "checking web-1 of service web with GET "+app.URL+"/health every 200ms (timeout 200ms)") {
					t.Fatalf("first line %q", l)
				}
			}
			// Within the thresholds times the interval of the flip (the
			// first line: of the start, plus the process's own start).
			want(client.CheckPassing, "registered web-1 in service web at 10.0.0.1:80 (index ", "", true, started, 2*interval)
			healthy.Store(false)
			want(client.CheckFailing, "deregistered web-1: http check: GET "+app.URL+"/health: 500 Internal Server Error", "500 Internal Server Error",
				false, time.Now(), 3*interval)
			healthy.Store(true)
			want(client.CheckPassing, "registered web-1", "", true, time.Now(), 2*interval)

			if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
				t.Fatal(err)
			}
			if !tc.json {
				if l := lines.next(t); l != "deregistered web-1" {
					t.Fatalf("last line %q", l)
				}
			}
			if err := cmd.Wait(); err != nil {
				t.Fatalf("register: %v, stderr %q", err, stderr.String())
			}
			if insts, err := c.Instances(ctx, "web"); err != nil || len(insts) != 0 {
				t.Fatalf("instances after the interrupt = %v, %v", insts, err)
			}
		})
	}
}

func TestRegisterCheckUsage(t *testing.T) {
	for _, tc := range []struct {
		args []string
		text string
	}{
		{[]string{"--check-http", "http://127.0.0.1:1/", "--check-tcp", "127.0.0.1:1"}, "not both"},
		{[]string{"--check-http", "127.0.0.1:1/health"}, "is not an http:// or https:// URL"},
		{[]string{"--check-tcp", "nope"}, "is not host:port"},
		{[]string{"--check-interval", "1s"}, "need --check-http or --check-tcp"},
		{[]string{"--check-tcp", "127.0.0.1:1", "--check-timeout", "0s"}, "must be positive"},
		{[]string{"--check-tcp", "127.0.0.1:1", "--check-failures", "0"}, "at least 1"},
	} {
		fails(t, "127.0.0.1:1", exitUsage, tc.text, append([]string{"register", "web", "10.0.0.1:80"}, tc.args...)...)
	}
}
