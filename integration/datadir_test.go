package integration

import (
	"bytes"
	"context"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestBinarySecondStartOnDataDirFailsFast starts the binary twice on one
// data dir: the second exits at once with an error naming the directory,
// and a start after the first was killed with SIGKILL (its lock file left
// behind) succeeds.
func TestBinarySecondStartOnDataDirFailsFast(t *testing.T) {
	dir := t.TempDir()
	ports := FreePorts(t, 2)
	first := startDaemon(t, dir, "127.0.0.1:"+strconv.Itoa(ports[0]))

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	second := exec.CommandContext(ctx, discoverdBinary(t), "--data-dir", dir,
		"--addr", "127.0.0.1:"+strconv.Itoa(ports[1]), "--nats-addr", "off", "--log-format", "json")
	var stderr bytes.Buffer
	second.Stderr = &stderr
	start := time.Now()
	err := second.Run()
	took := time.Since(start)
	if ctx.Err() != nil {
		t.Fatalf("the second discoverd on %s still ran after %v", dir, took)
	}
	if err == nil {
		t.Fatalf("the second discoverd on %s exited 0; stderr %q", dir, stderr.String())
	}
	// The bound is the contract (5s); the process itself takes
	// milliseconds, the rest is room for a loaded machine.
	if took > 5*time.Second {
		t.Errorf("the second discoverd took %v to fail, want under 5s", took)
	}
	if msg := stderr.String(); !strings.Contains(msg, "data dir "+dir) || !strings.Contains(msg, "in use") {
		t.Errorf("stderr %q does not say the data dir %s is in use", msg, dir)
	}

	// SIGKILL leaves the lock file; the lock itself dies with the process.
	if err := first.stop(syscall.SIGKILL); err == nil {
		t.Fatal("a killed daemon exited 0")
	}
	startDaemon(t, dir, "127.0.0.1:"+strconv.Itoa(ports[1]))
}
