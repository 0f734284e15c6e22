package integration

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// lockedBuffer collects a process's stderr.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// rawConn is one kept-alive HTTP/1.1 connection spoken by hand.
type rawConn struct {
	c  net.Conn
	br *bufio.Reader
}

func dialRaw(addr string) (*rawConn, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	return &rawConn{c: c, br: bufio.NewReader(c)}, nil
}

// send writes a request and reads the answer's head (and its body unless
// it is an event stream) within 3 s.
func (r *rawConn) send(method, path, accept, body string) (*http.Response, []byte, error) {
	r.c.SetDeadline(time.Now().Add(3 * time.Second))
	defer r.c.SetDeadline(time.Time{})
	fmt.Fprintf(r.c, "%s %s HTTP/1.1\r\nHost: x\r\nAccept: %s\r\nContent-Length: %d\r\n\r\n%s", method, path, accept, len(body), body)
	resp, err := http.ReadResponse(r.br, nil)
	if err != nil {
		return nil, nil, err
	}
	if accept == "text/event-stream" && resp.StatusCode == 200 {
		return resp, nil, nil
	}
	b, err := io.ReadAll(resp.Body)
	return resp, b, err
}

// cpuTicks is a process's user+system CPU time, in clock ticks.
func cpuTicks(t *testing.T, pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+2:]))
	u, _ := strconv.ParseInt(f[11], 10, 64)
	s, _ := strconv.ParseInt(f[12], 10, 64)
	return u + s
}

func TestBinaryOutOfFileDescriptorsKeepsServing(t *testing.T) {
	addr := fmt.Sprintf("127.0.0.1:%d", FreePorts(t, 1)[0])
	var stderr lockedBuffer
	cmd := exec.Command("sh", "-c", `ulimit -n 64 && exec "$@"`, "sh", discoverdBinary(t),
		"--data-dir", t.TempDir(), "--addr", addr, "--nats-addr", "off", "--instance-ttl", "60s",
		"--log-format", "json", "--log-level", "warn")
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	var ctl *rawConn
	WaitFor(t, 10*time.Second, "the daemon to serve", func() bool {
		c, err := dialRaw(addr)
		if err != nil {
			return false
		}
		if resp, _, err := c.send("PUT", "/services/web", "application/json", "{}"); err == nil && resp.StatusCode == 200 {
			ctl = c
			return true
		}
		c.c.Close()
		return false
	})
	defer ctl.c.Close()

	// Hold streams until the daemon has no descriptor left for another.
	var streams []*rawConn
	defer func() {
		for _, s := range streams {
			s.c.Close()
		}
	}()
	for len(streams) < 200 {
		s, err := dialRaw(addr)
		if err != nil {
			t.Fatal(err)
		}
		resp, _, err := s.send("GET", "/services/web", "text/event-stream", "")
		if err != nil {
			s.c.Close()
			break // refused: out of descriptors
		}
		if resp.StatusCode != 200 {
			t.Fatalf("stream %d: %d", len(streams)+1, resp.StatusCode)
		}
		streams = append(streams, s)
	}
	if len(streams) == 200 {
		t.Fatal("200 streams opened under ulimit -n 64")
	}
	// More clients are refused at once, not left waiting.
	for range 5 {
		if s, err := dialRaw(addr); err == nil {
			if _, _, err := s.send("GET", "/ping", "application/json", ""); err == nil {
				t.Fatal("a new connection was served while the daemon was out of descriptors")
			}
			s.c.Close()
		}
	}
	// It does not spin on accept errors.
	before := cpuTicks(t, cmd.Process.Pid)
	time.Sleep(2 * time.Second)
	if used := cpuTicks(t, cmd.Process.Pid) - before; used > 50 {
		t.Fatalf("the daemon used %d CPU ticks in 2 s while out of descriptors: spinning", used)
	}
	// The connections it has are served: a write on one, its event on the
	// held streams.
	if resp, b, err := ctl.send("PUT", "/services/web/instances/a", "application/json", `{"addr":"10.0.0.1:80","proto":"http"}`); err != nil || resp.StatusCode != 200 {
		t.Fatalf("register on a held connection while out of descriptors: %v %v %s", resp, err, b)
	}
	for i, s := range []*rawConn{streams[0], streams[len(streams)-1]} {
		s.c.SetReadDeadline(time.Now().Add(10 * time.Second))
		for {
			line, err := s.br.ReadString('\n')
			if err != nil {
				t.Fatalf("held stream %d: %v", i, err)
			}
			if strings.Contains(line, `"kind":"up"`) {
				break
			}
		}
	}

	// Streams close, descriptors come back, and the refusals were counted.
	for _, s := range streams {
		s.c.Close()
	}
	streams = nil
	var metrics string
	WaitFor(t, 10*time.Second, "the daemon to accept again", func() bool {
		resp, err := (&http.Client{Timeout: 3 * time.Second}).Get("http://" + addr + "/metrics")
		if err != nil {
			return false
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		metrics = string(b)
		return resp.StatusCode == 200
	})
	refused := -1
	for _, line := range strings.Split(metrics, "\n") {
		if v, ok := strings.CutPrefix(line, "discoverd_conns_refused_no_fd_total "); ok {
			refused, _ = strconv.Atoi(v)
		}
	}
	if refused < 1 {
		t.Fatalf("discoverd_conns_refused_no_fd_total %d, want at least 1", refused)
	}
	if n := strings.Count(stderr.String(), "out of file descriptors"); n != 1 {
		t.Fatalf("logged running out of descriptors %d times, want once:\n%s", n, stderr.String())
	}
}

func TestBinarySIGTERMWithManyStreamsExitsWithin5s(t *testing.T) {
	const http1Streams, h2Streams = 2000, 2000
	addr := fmt.Sprintf("127.0.0.1:%d", FreePorts(t, 1)[0])
	d := runDaemon(t, t.TempDir(), addr, "--nats-addr", "off", "--max-conns-per-client", "0")
	mustDo(t, "PUT", d.url()+"/services/web", map[string]string{})

	var ended sync.WaitGroup
	for i := range http1Streams {
		s, err := dialRaw(addr)
		if err == nil {
			var resp *http.Response
			if resp, _, err = s.send("GET", "/services/web", "text/event-stream", ""); err == nil && resp.StatusCode != 200 {
				err = fmt.Errorf("status %d", resp.StatusCode)
			}
		}
		if err != nil {
			t.Fatalf("HTTP/1.1 stream %d: %v", i, err)
		}
		defer s.c.Close()
		ended.Add(1)
		go func() {
			defer ended.Done()
			io.Copy(io.Discard, s.br)
		}()
	}
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	h2 := &http.Client{Transport: &http.Transport{Protocols: &p}}
	for i := range h2Streams {
		req, _ := http.NewRequest("GET", d.url()+"/services/web", nil)
		req.Header.Set("Accept", "text/event-stream")
		resp, err := h2.Do(req)
		if err == nil && (resp.StatusCode != 200 || resp.ProtoMajor != 2) {
			err = fmt.Errorf("status %d over %s", resp.StatusCode, resp.Proto)
		}
		if err != nil {
			t.Fatalf("HTTP/2 stream %d: %v", i, err)
		}
		defer resp.Body.Close()
		ended.Add(1)
		go func() {
			defer ended.Done()
			// An HTTP/2 stream may end with a reset as the process exits.
			io.Copy(io.Discard, resp.Body)
		}()
	}

	start := time.Now()
	if err := d.stop(syscall.SIGTERM); err != nil {
		t.Fatalf("exit after SIGTERM: %v", err)
	}
	took := time.Since(start)
	if took > 5*time.Second {
		t.Fatalf("exited %s after SIGTERM with %d streams open, want within 5s", took, http1Streams+h2Streams)
	}
	t.Logf("exited %s after SIGTERM with %d streams open", took, http1Streams+h2Streams)
	waitDone := make(chan struct{})
	go func() { ended.Wait(); close(waitDone) }()
	select {
	case <-waitDone:
	case <-time.After(10 * time.Second):
		t.Fatal("streams still open after the daemon exited")
	}
}
