package integration

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
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
	cmd := exec.Command(discoverdBinary(t),
		"--data-dir", dir, "--addr", addr, "--nats-addr", "off",
		"--instance-ttl", "30s", "--log-format", "json", "--log-level", "warn")
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
