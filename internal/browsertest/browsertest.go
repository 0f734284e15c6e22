package browsertest

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// Wait is the default deadline of a condition: long, because a shared CI
// machine may be slow to start the browser, render, or run the node.
const Wait = 30 * time.Second

// Chromium returns the browser's path; see the package comment for what
// happens without one.
func Chromium(t testing.TB) string {
	t.Helper()
	path := os.Getenv("DISCOVERD_CHROMIUM")
	if path == "" {
		path = "/usr/bin/chromium"
	}
	if _, err := exec.LookPath(path); err != nil {
		msg := fmt.Sprintf("no Chromium at %s (%v): install it with `apt-get install -y chromium`, or set DISCOVERD_CHROMIUM", path, err)
		if os.Getenv("CI") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return path
}

// Browser is one headless Chromium with one tab.
type Browser struct {
	t   testing.TB
	ctx context.Context

	mu     sync.Mutex
	errors []string
	// slowest is the longest script round trip since ResetSlowest: a page
	// whose main thread is busy answers late.
	slowest time.Duration
}

// ResetSlowest starts a new measure of the longest script round trip.
func (b *Browser) ResetSlowest() {
	b.mu.Lock()
	b.slowest = 0
	b.mu.Unlock()
}

// Slowest is the longest script round trip since ResetSlowest: how long
// the page's main thread kept a script waiting at worst.
func (b *Browser) Slowest() time.Duration {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.slowest
}

// New starts Chromium with a window of width×height pixels. It stops when
// the test ends.
func New(t testing.TB, width, height int) *Browser {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(Chromium(t)),
		chromedp.Headless,
		// Tests run as root in CI, where Chromium's sandbox refuses to start.
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.WindowSize(width, height),
		chromedp.Flag("disable-dev-shm-usage", true),
	)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(allocCtx)
	b := &Browser{t: t, ctx: ctx}
	// The first action starts the browser, which lives as long as the
	// context of that action: it must be ctx itself, not one with a timeout.
	if err := chromedp.Do(ctx); err != nil {
		cancel()
		cancelAlloc()
		t.Fatalf("starting Chromium: %v", err)
	}
	messages := chromedp.Console(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for m, err := range messages {
			if err != nil {
				return
			}
			b.record(m)
		}
	}()
	t.Cleanup(func() {
		cancel()
		cancelAlloc()
		<-done
	})
	return b
}

// record keeps the messages that are errors of the page: console.error
// calls, uncaught exceptions and unhandled rejections, and the browser's
// own errors about the page (a blocked script, a refused policy). Failed
// requests are left out: a test that stops the server makes them on
// purpose, and the page shows them as "reconnecting".
func (b *Browser) record(m chromedp.ConsoleMessage) {
	if m.Type != chromedp.ConsoleError && !m.IsException() {
		return
	}
	if m.Source == "network" {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.errors = append(b.errors, fmt.Sprintf("%s (%s:%d)", m, m.URL, m.Line+1))
}

// ConsoleErrors returns the page's errors so far.
func (b *Browser) ConsoleErrors() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.errors...)
}

// Do runs actions, failing the test on an error or after Wait.
func (b *Browser) Do(what string, actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, Wait)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		b.t.Fatalf("%s: %v", what, err)
	}
}

// Navigate opens url.
func (b *Browser) Navigate(url string) {
	b.t.Helper()
	b.Do("navigating to "+url, chromedp.Navigate(url))
}

// Eval evaluates a JavaScript expression and decodes its JSON value into out
// (nil to discard it).
func (b *Browser) Eval(expr string, out any) error {
	ctx, cancel := context.WithTimeout(b.ctx, Wait)
	defer cancel()
	start := time.Now()
	raw, err := chromedp.Run(ctx, chromedp.Evaluate[json.RawMessage](expr))
	took := time.Since(start)
	b.mu.Lock()
	b.slowest = max(b.slowest, took)
	b.mu.Unlock()
	if err != nil {
		return err
	}
	if out == nil {
		return nil
	}
	return json.Unmarshal(raw, out)
}

// MustEval is Eval that fails the test on an error.
func (b *Browser) MustEval(expr string, out any) {
	b.t.Helper()
	if err := b.Eval(expr, out); err != nil {
		b.t.Fatalf("evaluating %s: %v", expr, err)
	}
}

// WaitFor polls the JavaScript expression cond until it is true, for at most
// timeout (Wait when zero). On a timeout the test fails with what and the
// page's visible text, to show what the page showed instead.
func (b *Browser) WaitFor(what, cond string, timeout time.Duration) time.Duration {
	b.t.Helper()
	if timeout <= 0 {
		timeout = Wait
	}
	start := time.Now()
	deadline := start.Add(timeout)
	var lastErr error
	for {
		var ok bool
		lastErr = b.Eval("!!("+cond+")", &ok)
		if lastErr == nil && ok {
			return time.Since(start)
		}
		if time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	var text string
	_ = b.Eval(`document.body ? document.body.innerText.slice(0, 3000) : ""`, &text)
	b.t.Fatalf("waiting %v for %s: not true (last error: %v); the page shows:\n%s", timeout, what, lastErr, text)
	return 0
}

// Click clicks the first element matching the CSS selector.
func (b *Browser) Click(selector string) {
	b.t.Helper()
	b.Do("clicking "+selector, chromedp.Click(chromedp.CSS(selector)))
}

// Keys types keys into the focused element.
func (b *Browser) Keys(keys string) {
	b.t.Helper()
	b.Do("typing "+keys, chromedp.KeyEvent(keys))
}

// Resize sets the viewport to width×height.
func (b *Browser) Resize(width, height int) {
	b.t.Helper()
	b.Do("resizing the viewport", chromedp.EmulateViewport(int64(width), int64(height)))
}

// Screenshot saves a PNG of the viewport as dir/name.
func (b *Browser) Screenshot(dir, name string) string {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, Wait)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		b.t.Fatalf("screenshot %s: %v", name, err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		b.t.Fatal(err)
	}
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, png, 0o644); err != nil {
		b.t.Fatal(err)
	}
	b.t.Logf("screenshot: %s", path)
	return path
}

// Quote returns s as a JavaScript string literal.
func Quote(s string) string {
	q, _ := json.Marshal(s)
	return string(q)
}

// NoConsoleErrors fails the test if the page logged an error.
func (b *Browser) NoConsoleErrors() {
	b.t.Helper()
	if errs := b.ConsoleErrors(); len(errs) > 0 {
		b.t.Errorf("the page logged %d JavaScript error(s):\n%s", len(errs), strings.Join(errs, "\n"))
	}
}
