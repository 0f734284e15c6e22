package client_test

import (
	"bytes"
	"context"
	"io/fs"
	"log"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/discoverd/discoverd/client"
	"github.com/discoverd/discoverd/internal/testnode"
)

// codeLines is text as its non-blank lines without their indentation, so
// that a README snippet matches the code of an example at any depth.
func codeLines(text string) []string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			out = append(out, l)
		}
	}
	return out
}

func containsRun(haystack, needle []string) bool {
	for i := 0; i+len(needle) <= len(haystack); i++ {
		if equalLines(haystack[i:i+len(needle)], needle) {
			return true
		}
	}
	return false
}

func equalLines(a, b []string) bool {
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestREADMEGoSnippets checks that every Go snippet of README.md is, line for
// line, code of a test file of the repository (an example, such as
// Example_quickStart), which the compiler checks and the tests run.
func TestREADMEGoSnippets(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	var sources [][]string
	err = filepath.WalkDir("..", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && strings.HasPrefix(d.Name(), ".") && path != ".." {
			return filepath.SkipDir
		}
		if !d.IsDir() && strings.HasSuffix(path, "_test.go") {
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			sources = append(sources, codeLines(string(b)))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(string(readme), "```go\n")
	if len(parts) < 3 {
		t.Fatalf("README has %d Go snippets, want the quick start's, the NATS one and more", len(parts)-1)
	}
	for _, part := range parts[1:] {
		snippet, _, ok := strings.Cut(part, "```")
		if !ok {
			t.Fatalf("unterminated Go snippet %q", part)
		}
		want := codeLines(snippet)
		found := false
		for _, src := range sources {
			if containsRun(src, want) {
				found = true
				break
			}
		}
		if !found {
			t.Errorf("README Go snippet is not the code of any test file (put it in an example, so that it compiles and runs):\n%s", snippet)
		}
	}
}

// logBuffer captures the standard logger's output for the examples.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func captureLog(t *testing.T) *logBuffer {
	buf := &logBuffer{}
	log.SetOutput(buf)
	t.Cleanup(func() { log.SetOutput(os.Stderr) })
	return buf
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestQuickStartRuns runs the README's quick start against a real node,
// interrupts it as Ctrl-C does and finds its instance deregistered.
func TestQuickStartRuns(t *testing.T) {
	s := testnode.Start(t, testnode.Options{TTL: 10 * time.Second})
	t.Setenv("DISCOVERD", s.Addr())
	logs := captureLog(t)
	c := client.New(s.Addr())
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	done := make(chan struct{})
	go func() {
		defer close(done)
		Example_quickStart()
	}()
	waitFor(t, "the quick start to register and lead", func() bool {
		return strings.Contains(logs.String(), "(am I? true)")
	})
	if insts, err := c.Instances(ctx, "web"); err != nil || len(insts) != 1 || insts[0].Addr != "127.0.0.1:8080" {
		t.Fatalf("instances while it runs = %v, %v", insts, err)
	}
	// Ctrl-C: the program's signal context ends its loop.
	if err := syscall.Kill(os.Getpid(), syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		t.Fatal("the quick start did not end on SIGINT")
	}
	if insts, err := c.Instances(ctx, "web"); err != nil || len(insts) != 0 {
		t.Fatalf("instances after Ctrl-C = %v, %v (not deregistered)", insts, err)
	}
}

// TestNATSSnippet runs the README's NATS program: it leads after it
// registers, it ends on Ctrl-C, and an unknown service or a stopped server
// is an error, not a panic.
func TestNATSSnippet(t *testing.T) {
	s := testnode.Start(t, testnode.Options{TTL: 10 * time.Second, NATS: true})
	logs := captureLog(t)
	c := client.New(s.Addr())
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	// No service yet: the registration's answer is the error.
	if err := runOrders(ctx, s.NATSURL()); err == nil || !strings.Contains(err.Error(), "object_not_found") {
		t.Fatalf("runOrders with no service = %v", err)
	}

	if err := c.AddService(ctx, "orders", nil); err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- runOrders(runCtx, s.NATSURL()) }()
	// It subscribed before it registered, so it sees its own leadership.
	waitFor(t, "runOrders to lead", func() bool { return strings.Contains(logs.String(), "leading since index") })
	if insts, err := c.Instances(ctx, "orders"); err != nil || len(insts) != 1 || insts[0].ID != "orders-1" {
		t.Fatalf("instances while it runs = %v, %v", insts, err)
	}
	stop()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("runOrders after its context ended = %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("runOrders did not end with its context")
	}

	s.Stop()
	if err := runOrders(ctx, s.NATSURL()); err == nil {
		t.Fatal("runOrders against a stopped server succeeded")
	}
}
