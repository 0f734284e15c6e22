package integration

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/discoverd/discoverd/api"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// discoverdBinary builds cmd/discoverd once per test run.
func discoverdBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "discoverd-bin")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "discoverd")
		out, err := exec.Command("go", "build", "-o", binPath, "../cmd/discoverd").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// daemon is a discoverd process started from the built binary.
type daemon struct {
	t    *testing.T
	cmd  *exec.Cmd
	addr string
	dir  string
	done chan error
}

func startDaemon(t *testing.T, dir, addr string) *daemon {
	t.Helper()
	return runDaemon(t, dir, addr, "--nats-addr", "off", "--instance-ttl", "30s")
}

// runDaemon starts the binary with its data dir, address and args, and
// waits until it serves reads.
func runDaemon(t *testing.T, dir, addr string, args ...string) *daemon {
	t.Helper()
	cmd := exec.Command(discoverdBinary(t), append([]string{
		"--data-dir", dir, "--addr", addr, "--log-format", "json", "--log-level", "warn"}, args...)...)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	d := &daemon{t: t, cmd: cmd, addr: addr, dir: dir, done: make(chan error, 1)}
	go func() { d.done <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-d.done
	})
	WaitFor(t, 10*time.Second, "the daemon to serve", func() bool {
		code, _ := do(t, "GET", d.url()+"/services", nil)
		return code == 200
	})
	return d
}

func (d *daemon) url() string { return "http://" + d.addr }

// stop sends sig and waits for the process to exit, returning its error.
func (d *daemon) stop(sig os.Signal) error {
	d.cmd.Process.Signal(sig)
	select {
	case err := <-d.done:
		d.done <- err // for the cleanup
		return err
	case <-time.After(10 * time.Second):
		d.t.Fatalf("daemon did not exit within 10s of %v", sig)
	}
	return nil
}

func TestBinaryRestartKeepsAcknowledgedWrites(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGKILL} {
		t.Run(sig.String(), func(t *testing.T) {
			dir := t.TempDir()
			addr := "127.0.0.1:" + strconv.Itoa(FreePorts(t, 1)[0])
			d := startDaemon(t, dir, addr)
			mustDo(t, "PUT", d.url()+"/services/web", api.ServiceConfig{})
			var want []string
			for i := 0; i < 50; i++ {
				id := fmt.Sprintf("i%02d", i)
				mustDo(t, "PUT", d.url()+"/services/web/instances/"+id, api.Instance{Addr: fmt.Sprintf("10.0.0.%d:80", i+1), Proto: "http"})
				want = append(want, id)
			}
			var meta api.ServiceMeta
			json.Unmarshal(mustDo(t, "PUT", d.url()+"/services/web/meta", api.ServiceMeta{Data: json.RawMessage(`{"v":1}`)}), &meta)
			stream := openSSE(t, d.url()+"/services/web")

			err := d.stop(sig)
			if sig == syscall.SIGTERM && err != nil {
				t.Fatalf("clean shutdown exited with %v", err)
			}
			if sig == syscall.SIGTERM {
				// The open stream was ended by the shutdown, not left hanging.
				select {
				case <-streamClosed(stream):
				case <-time.After(5 * time.Second):
					t.Fatal("SSE stream still open after SIGTERM")
				}
			}

			d = startDaemon(t, dir, addr)
			got := instances(t, d.url(), "web")
			if len(got) != len(want) {
				t.Fatalf("after %v and restart: %d instances, want %d", sig, len(got), len(want))
			}
			for i, inst := range got {
				if inst.ID != want[i] {
					t.Fatalf("after restart instance %d is %s, want %s", i, inst.ID, want[i])
				}
			}
			var m api.ServiceMeta
			json.Unmarshal(mustDo(t, "GET", d.url()+"/services/web/meta", nil), &m)
			if m.Index != meta.Index || string(m.Data) != `{"v":1}` {
				t.Fatalf("meta after restart %+v, want %+v", m, meta)
			}
		})
	}
}

// streamClosed drains s and closes the returned channel when it ends.
func streamClosed(s *sse) chan struct{} {
	ch := make(chan struct{})
	go func() {
		for range s.events {
		}
		close(ch)
	}()
	return ch
}

// startBinaryCluster starts n voters from the built binary on loopback, with
// NATS routes between them, and returns them once each serves reads.
func startBinaryCluster(t *testing.T, n int, args ...string) []*daemon {
	t.Helper()
	ports := FreePorts(t, 3*n)
	var peers []string
	for i := 0; i < n; i++ {
		peers = append(peers, "127.0.0.1:"+strconv.Itoa(ports[3*i]))
	}
	ds := make([]*daemon, n)
	var wg sync.WaitGroup
	for i := range ds {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ds[i] = runDaemon(t, t.TempDir(), peers[i], append([]string{
				"--peers", strings.Join(peers, ","),
				"--nats-addr", "127.0.0.1:" + strconv.Itoa(ports[3*i+1]),
				"--nats-cluster-addr", "127.0.0.1:" + strconv.Itoa(ports[3*i+2]),
				// Raft logs every missed contact of a stopped voter.
				"--log-level", "error",
			}, args...)...)
		}()
	}
	wg.Wait()
	return ds
}

// binaryLeader waits until every daemon names the same Raft leader and
// returns it.
func binaryLeader(t *testing.T, ds []*daemon) *daemon {
	t.Helper()
	var leader *daemon
	WaitFor(t, 10*time.Second, "every voter naming the same raft leader", func() bool {
		leader = nil
		var host string
		for _, d := range ds {
			var li api.LeaderInfo
			code, body := do(t, "GET", d.url()+"/raft/leader", nil)
			if code != 200 || json.Unmarshal(body, &li) != nil || li.Host == "" || (host != "" && li.Host != host) {
				return false
			}
			host = li.Host
		}
		for _, d := range ds {
			if d.addr == host {
				leader = d
			}
		}
		return leader != nil
	})
	return leader
}

// A voter whose process was stopped for longer than the TTL finds, when it
// runs again, the leader's heartbeats of long ago waiting in its sockets,
// together with the heartbeats its clients sent meanwhile. It must not
// acknowledge those from the state it had before it stopped: the leader
// expired the instance in the meantime.
func TestBinaryStoppedFollowerDoesNotAcknowledgeFromStaleState(t *testing.T) {
	ds := startBinaryCluster(t, 3, "--instance-ttl", "1s", "--expiry-check-interval", "100ms")
	leader := binaryLeader(t, ds)
	var follower *daemon
	for _, d := range ds {
		if d != leader {
			follower = d
		}
	}
	mustDo(t, "PUT", leader.url()+"/services/web", api.ServiceConfig{})
	var first api.Instance
	if err := json.Unmarshal(mustDo(t, "PUT", follower.url()+"/services/web/instances/x", api.Instance{Addr: "10.0.0.1:80", Proto: "http"}), &first); err != nil {
		t.Fatal(err)
	}
	if code, body := register(t, follower.url(), "web", "x", "10.0.0.1:80"); code != 200 {
		t.Fatalf("heartbeat through the follower before it stopped: %d %s", code, body)
	}

	follower.cmd.Process.Signal(syscall.SIGSTOP)
	t.Cleanup(func() { follower.cmd.Process.Signal(syscall.SIGCONT) })
	WaitFor(t, 10*time.Second, "the leader expiring x", func() bool {
		for _, inst := range instances(t, leader.url(), "web") {
			if inst.ID == "x" {
				return false
			}
		}
		return true
	})
	// Heartbeats of x sent to the stopped follower: the kernel accepts the
	// connections and buffers the requests until it runs again.
	body := `{"addr":"10.0.0.1:80","proto":"http"}`
	req := "PUT /services/web/instances/x HTTP/1.1\r\nHost: " + follower.addr +
		"\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body
	var conns []net.Conn
	for range 8 {
		c, err := net.DialTimeout("tcp", follower.addr, 2*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := io.WriteString(c, req); err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	follower.cmd.Process.Signal(syscall.SIGCONT)
	refused, registered := 0, 0
	for i, c := range conns {
		c.SetDeadline(time.Now().Add(15 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("heartbeat %d: %v", i, err)
		}
		answer, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		switch resp.StatusCode {
		case http.StatusServiceUnavailable:
			// Told to retry: it could not vouch for its state yet.
			refused++
		case http.StatusOK:
			var inst api.Instance
			if err := json.Unmarshal(answer, &inst); err != nil {
				t.Fatalf("heartbeat %d: %v in %s", i, err, answer)
			}
			if inst.Index == first.Index {
				t.Fatalf("heartbeat %d was acknowledged with the index %d the leader had expired: answered from stale state", i, inst.Index)
			}
			registered++
		default:
			t.Fatalf("heartbeat %d: %s %s", i, resp.Status, answer)
		}
	}
	t.Logf("after the stop: %d heartbeats refused, %d registered x anew", refused, registered)
	// Once it has caught up, it takes heartbeats again, and x comes back
	// as a new registration.
	var again api.Instance
	WaitFor(t, 10*time.Second, "the follower taking heartbeats again", func() bool {
		code, body := register(t, follower.url(), "web", "x", "10.0.0.1:80")
		return code == 200 && json.Unmarshal(body, &again) == nil
	})
	if again.Index == first.Index {
		t.Fatalf("x acknowledged with its expired index %d after the follower caught up", again.Index)
	}
}
