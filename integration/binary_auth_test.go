package integration

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/discoverd/discoverd/api"
)

// TestBinarySIGHUPReloadsTheAuthFile: on SIGHUP the daemon takes a token
// added to the file, drops a removed one and closes the streams opened with
// it, and keeps its tokens when the file does not parse.
func TestBinarySIGHUPReloadsTheAuthFile(t *testing.T) {
	dir := t.TempDir()
	authPath := filepath.Join(dir, "auth.json")
	if err := os.WriteFile(authPath, []byte(SecureAuthFile), 0o600); err != nil {
		t.Fatal(err)
	}
	addr := "127.0.0.1:" + strconv.Itoa(FreePorts(t, 1)[0])
	logs := &lockedBuffer{}
	cmd := exec.Command(discoverdBinary(t), "--data-dir", filepath.Join(dir, "data"), "--addr", addr,
		"--nats-addr", "off", "--log-format", "json", "--auth-file", authPath)
	cmd.Stderr = logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-done
	})
	defer func() { suiteToken = "" }()
	as := func(token, method, path string, body any) int {
		suiteToken = token
		code, _ := do(t, method, "http://"+addr+path, body)
		return code
	}
	WaitFor(t, 10*time.Second, "the daemon to serve", func() bool {
		return as(AdminSecret, "PUT", "/services/web", api.ServiceConfig{}) == 200
	})
	if code := as("secret-new", "GET", "/services", nil); code != 401 {
		t.Fatalf("a token not in the file: %d", code)
	}
	suiteToken = ServiceSecret
	stream := openSSE(t, "http://"+addr+"/services/web")
	ended := streamClosed(stream)

	hup := func(want string) {
		t.Helper()
		before := strings.Count(logs.String(), want)
		cmd.Process.Signal(syscall.SIGHUP)
		WaitFor(t, 10*time.Second, "the log line "+want, func() bool { return strings.Count(logs.String(), want) > before })
	}

	// A broken file: refused, the tokens in force stay.
	os.WriteFile(authPath, []byte(`{"tokens": [{"name": "ops",`), 0o600)
	hup("auth file refused")
	if code := as(ServiceSecret, "PUT", "/services/web/instances/a", api.Instance{Addr: "10.0.0.1:80", Proto: "http"}); code != 200 {
		t.Fatalf("after a refused reload, a token in force answers %d", code)
	}

	// Add "new", remove "web".
	next := strings.Replace(SecureAuthFile, `"name": "web",  "secret": "`+ServiceSecret+`", "role": "service", "services": ["web", "web-*"]`,
		`"name": "new", "secret": "secret-new", "role": "read"`, 1)
	os.WriteFile(authPath, []byte(next), 0o600)
	hup("auth file reloaded")
	if code := as("secret-new", "GET", "/services", nil); code != 200 {
		t.Errorf("an added token answers %d", code)
	}
	if code := as(ServiceSecret, "GET", "/services", nil); code != 401 {
		t.Errorf("a removed token answers %d", code)
	}
	select {
	case <-ended:
	case <-time.After(10 * time.Second):
		t.Fatal("the stream opened with a removed token is still open")
	}
	if strings.Contains(logs.String(), ServiceSecret) || strings.Contains(logs.String(), AdminSecret) {
		t.Fatal("a secret was logged")
	}
}
