package integration

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/discoverd/discoverd/api"
)

// TestBinaryVersionFromLdflags builds discoverd with its version set as
// make build sets it, and reads it back from --version, the status and
// the metrics.
func TestBinaryVersionFromLdflags(t *testing.T) {
	const v = "v0.0.0-ldflags-test"
	bin := filepath.Join(t.TempDir(), "discoverd")
	out, err := exec.Command("go", "build", "-ldflags", "-X github.com/discoverd/discoverd/internal/version.Version="+v,
		"-o", bin, "../cmd/discoverd").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	got, err := exec.Command(bin, "--version").Output()
	if err != nil || !strings.HasPrefix(string(got), "discoverd "+v+" (go") {
		t.Fatalf("discoverd --version: %q, %v", got, err)
	}

	addr := "127.0.0.1:" + strconv.Itoa(FreePorts(t, 1)[0])
	cmd := exec.Command(bin, "--data-dir", t.TempDir(), "--addr", addr, "--nats-addr", "off", "--log-level", "error")
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	var st api.Status
	WaitFor(t, 10*time.Second, "the status", func() bool {
		code, b := do(t, "GET", "http://"+addr+"/.well-known/status", nil)
		return code == 200 && json.Unmarshal(b, &st) == nil
	})
	if st.Version != v {
		t.Errorf("status version %q, want %q", st.Version, v)
	}
	// The binary was built by the toolchain running this test.
	sample := `discoverd_build_info{go_version="` + runtime.Version() + `",version="` + v + `"}`
	if got := metricOf(t, "http://"+addr, sample); got != 1 {
		t.Errorf("discoverd_build_info{version=%q} = %v, want 1", v, got)
	}
}
