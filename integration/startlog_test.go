package integration

import (
	"bufio"
	"bytes"
	"encoding/json"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestBinaryStartLogHasNoWarning starts a single node of the built binary
// (a fresh data dir, then the same one again) and reads its log: a normal
// start warns about nothing, and its fields are named with underscores.
func TestBinaryStartLogHasNoWarning(t *testing.T) {
	dir := t.TempDir()
	ports := FreePorts(t, 2)
	addr := "127.0.0.1:" + strconv.Itoa(ports[0])
	for _, run := range []string{"fresh", "restart"} {
		var stderr bytes.Buffer
		cmd := exec.Command(discoverdBinary(t), "--data-dir", dir, "--addr", addr,
			"--nats-addr", "127.0.0.1:"+strconv.Itoa(ports[1]), "--log-format", "json", "--log-level", "info")
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		WaitFor(t, 10*time.Second, "the node to lead and serve", func() bool {
			code, b := do(t, "GET", "http://"+addr+"/.well-known/status", nil)
			return code == 200 && strings.Contains(string(b), `"role":"leader"`)
		})
		cmd.Process.Signal(syscall.SIGTERM)
		if err := cmd.Wait(); err != nil {
			t.Fatalf("%s: exit %v", run, err)
		}
		sc := bufio.NewScanner(&stderr)
		for sc.Scan() {
			var line map[string]any
			if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
				t.Errorf("%s: not a JSON log line: %q", run, sc.Text())
				continue
			}
			if line["level"] != "info" {
				t.Errorf("%s: a %v line on a normal start: %s", run, line["level"], sc.Text())
			}
			for k := range line {
				if strings.ContainsAny(k, "-@ ") {
					t.Errorf("%s: field %q in %s", run, k, sc.Text())
				}
			}
		}
	}
}
