package httpapi

import (
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// Limits on what a slow or stuck client may hold. A stream (SSE) is bounded
// by none of them: it stays open as long as its client reads it, and is
// closed by the node once its buffer is full when the client stops reading.
const (
	// ReadHeaderTimeout bounds reading a request's headers.
	ReadHeaderTimeout = 10 * time.Second
	// BodyTimeout is how long a request body may go without a byte
	// arriving: a body that stops arriving is cut off with a 400. A body
	// that keeps arriving (a large snapshot restore) is not cut.
	BodyTimeout = 10 * time.Second
	// IdleTimeout closes a keep-alive connection idle between requests.
	IdleTimeout = 2 * time.Minute
	// MaxHeaderBytes bounds a request's header block.
	MaxHeaderBytes = 64 << 10
)

// ServerOptions tunes NewServer; zero fields take the package's defaults.
type ServerOptions struct {
	ReadHeaderTimeout time.Duration
	BodyTimeout       time.Duration
	IdleTimeout       time.Duration
	MaxHeaderBytes    int
}

// NewServer returns an http.Server for h with the limits above. There is no
// WriteTimeout, which would cut SSE streams: a stream's writes end when its
// client goes away or its buffer fills. Bodies get their own deadline
// instead of a ReadTimeout, which would also fire on a stream's connection.
// On Shutdown, bodies still arriving are cut at once, so a stalled upload
// does not hold the shutdown.
func NewServer(h http.Handler, o ServerOptions) *http.Server {
	if o.ReadHeaderTimeout <= 0 {
		o.ReadHeaderTimeout = ReadHeaderTimeout
	}
	if o.BodyTimeout <= 0 {
		o.BodyTimeout = BodyTimeout
	}
	if o.IdleTimeout <= 0 {
		o.IdleTimeout = IdleTimeout
	}
	if o.MaxHeaderBytes <= 0 {
		o.MaxHeaderBytes = MaxHeaderBytes
	}
	bd := &bodyDeadlines{timeout: o.BodyTimeout, open: make(map[*deadlineBody]struct{})}
	srv := &http.Server{
		Handler:           bd.wrap(h),
		ReadHeaderTimeout: o.ReadHeaderTimeout,
		IdleTimeout:       o.IdleTimeout,
		MaxHeaderBytes:    o.MaxHeaderBytes,
	}
	srv.RegisterOnShutdown(bd.cutAll)
	return srv
}

// bodyDeadlines puts a read deadline on every request body and knows the
// bodies still being read, to cut them at shutdown.
type bodyDeadlines struct {
	timeout time.Duration
	mu      sync.Mutex
	open    map[*deadlineBody]struct{}
	// closing is set at shutdown; atomic, as a body reads it under its own
	// lock (cutAll takes mu, then each body's).
	closing atomic.Bool
}

var deadlineBodies = sync.Pool{New: func() any { return new(deadlineBody) }}

func (bd *bodyDeadlines) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0 {
			h.ServeHTTP(w, r)
			return
		}
		rc := http.NewResponseController(w)
		if rc.SetReadDeadline(time.Now().Add(bd.timeout)) != nil {
			// The connection cannot take a deadline (a test recorder):
			// serve as is.
			h.ServeHTTP(w, r)
			return
		}
		b := deadlineBodies.Get().(*deadlineBody)
		*b = deadlineBody{body: r.Body, rc: rc, owner: bd, timeout: bd.timeout, extended: time.Now()}
		bd.mu.Lock()
		if bd.closing.Load() {
			rc.SetReadDeadline(time.Now())
		}
		bd.open[b] = struct{}{}
		bd.mu.Unlock()
		r.Body = b
		h.ServeHTTP(w, r)
		bd.mu.Lock()
		delete(bd.open, b)
		bd.mu.Unlock()
		*b = deadlineBody{}
		deadlineBodies.Put(b)
	})
}

// cutAll ends every body still being read: its next or pending read fails.
func (bd *bodyDeadlines) cutAll() {
	bd.mu.Lock()
	defer bd.mu.Unlock()
	bd.closing.Store(true)
	now := time.Now()
	for b := range bd.open {
		b.cut(now)
	}
}

// deadlineBody is a request body under a read deadline. Once the body is
// read to its end, the deadline is lifted: the server then reads the
// connection in the background to notice a client that goes away, and a
// deadline firing there would cancel a handler still at work.
type deadlineBody struct {
	body  io.ReadCloser
	rc    *http.ResponseController
	owner *bodyDeadlines
	// timeout is the deadline's length; extended is when it was last
	// pushed back. A body still arriving has it pushed back once it is half
	// spent, so a large upload is not cut while a stalled one is.
	timeout  time.Duration
	extended time.Time
	// mu orders lifting the deadline against cutting it at shutdown.
	mu   sync.Mutex
	done bool
}

func (b *deadlineBody) Read(p []byte) (int, error) {
	n, err := b.body.Read(p)
	if err == io.EOF {
		b.finish()
	} else if n > 0 && err == nil {
		if now := time.Now(); now.Sub(b.extended) > b.timeout/2 {
			b.extend(now)
		}
	}
	return n, err
}

// extend pushes the deadline back after progress, unless the body was cut.
func (b *deadlineBody) extend(now time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.done || b.owner.closing.Load() {
		return
	}
	b.extended = now
	b.rc.SetReadDeadline(now.Add(b.timeout))
}

func (b *deadlineBody) Close() error { return b.body.Close() }

// finish lifts the deadline once the body is read to its end. A body that
// failed keeps it: the server would otherwise wait on the connection to
// drain the rest of that body.
func (b *deadlineBody) finish() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.done {
		return
	}
	b.done = true
	b.rc.SetReadDeadline(time.Time{})
}

func (b *deadlineBody) cut(now time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.done {
		b.rc.SetReadDeadline(now)
	}
}
