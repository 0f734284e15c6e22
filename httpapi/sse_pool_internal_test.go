package httpapi

import (
	"bufio"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/discoverd/discoverd/api"
)

// fakeStream is a Stream that notifies, as the node's subscriptions do:
// the notify callback runs with the stream's lock held.
type fakeStream struct {
	mu     sync.Mutex
	queue  []api.Event
	closed bool
	err    error
	notify func()
}

func (f *fakeStream) Ready() <-chan struct{} { return nil }

func (f *fakeStream) Take(dst []api.Event) ([]api.Event, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	dst = append(dst, f.queue...)
	f.queue = f.queue[:0]
	return dst, !f.closed
}

func (f *fakeStream) Err() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.err
}

func (f *fakeStream) Close() { f.end(nil) }

func (f *fakeStream) Notify(fn func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.notify = fn
	if len(f.queue) > 0 || f.closed {
		fn()
	}
}

func (f *fakeStream) send(ev api.Event) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return
	}
	f.queue = append(f.queue, ev)
	if f.notify != nil {
		f.notify()
	}
}

func (f *fakeStream) end(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return
	}
	f.closed, f.err = true, err
	if f.notify != nil {
		f.notify()
	}
}

// poolStream is one pooled stream under test: the server end of a pipe
// served by the pool, and the client end.
type poolStream struct {
	st     *fakeStream
	client net.Conn
}

func addPoolStream(t *testing.T, p *rawPool) *poolStream {
	server, client := net.Pipe()
	t.Cleanup(func() { client.Close() })
	ps := &poolStream{st: &fakeStream{}, client: client}
	p.add(server, ps.st, ps.st)
	return ps
}

// readEvents reads the client end until it closes, and returns the event
// ids in the order read and the data of a final error event.
func readEvents(conn net.Conn) (ids []uint64, errData string, err error) {
	br := bufio.NewReader(conn)
	isError := false
	for {
		line, rerr := br.ReadString('\n')
		if rerr == io.EOF {
			return ids, errData, nil
		}
		if rerr != nil {
			return ids, errData, rerr
		}
		line = strings.TrimSuffix(line, "\n")
		switch {
		case strings.HasPrefix(line, "id: "):
			n, perr := strconv.ParseUint(line[4:], 10, 64)
			if perr != nil {
				return ids, errData, perr
			}
			ids = append(ids, n)
		case line == "event: error":
			isError = true
		case isError && strings.HasPrefix(line, "data: "):
			errData = line[6:]
		}
	}
}

func checkInOrder(t *testing.T, name string, ids []uint64, n int) {
	t.Helper()
	if len(ids) != n {
		t.Fatalf("%s: read %d events, want %d", name, len(ids), n)
	}
	for i, id := range ids {
		if id != uint64(i+1) {
			t.Fatalf("%s: event %d has id %d, want %d (out of order or lost)", name, i, id, i+1)
		}
	}
}

type readResult struct {
	ids     []uint64
	errData string
	err     error
}

func readAsync(conn net.Conn) <-chan readResult {
	ch := make(chan readResult, 1)
	go func() {
		ids, errData, err := readEvents(conn)
		ch <- readResult{ids, errData, err}
	}()
	return ch
}

func waitRead(t *testing.T, name string, ch <-chan readResult) readResult {
	t.Helper()
	select {
	case r := <-ch:
		if r.err != nil {
			t.Fatalf("%s: reading: %v", name, r.err)
		}
		return r
	case <-time.After(30 * time.Second):
		t.Fatalf("%s: the stream did not end", name)
	}
	return readResult{}
}

func leaderEvent(i int) api.Event {
	return api.Event{Service: "web", Kind: api.EventLeader, Index: uint64(i),
		Instance: &api.Instance{ID: "i" + strconv.Itoa(i), Addr: "10.0.0.1:80", Proto: "http"}}
}

// TestRawPoolOrder checks that the pool's writers, several at once, write
// each stream's events complete and in order while events keep arriving
// (a stream notified while it is written is queued again, never written by
// two writers), then the stream's error event, and close its connection.
func TestRawPoolOrder(t *testing.T) {
	p := newRawPool(time.Hour)
	const streams, events = 16, 2000
	var ps []*poolStream
	var reads []<-chan readResult
	for range streams {
		s := addPoolStream(t, p)
		ps = append(ps, s)
		reads = append(reads, readAsync(s.client))
	}
	// One producer, as the node's fan-out is one, sending to every stream
	// in turn.
	for i := 1; i <= events; i++ {
		ev := leaderEvent(i)
		for _, s := range ps {
			s.st.send(ev)
		}
	}
	for _, s := range ps {
		s.st.end(ErrTestEnded)
	}
	for j, ch := range reads {
		r := waitRead(t, "stream "+strconv.Itoa(j), ch)
		checkInOrder(t, "stream "+strconv.Itoa(j), r.ids, events)
		if !strings.Contains(r.errData, "test ended") {
			t.Fatalf("stream %d: final error event %q", j, r.errData)
		}
	}
	waitPoolEmpty(t, p)
}

// ErrTestEnded ends the test streams.
var ErrTestEnded = api.Errorf(api.CodeUnavailable, "test ended")

// TestRawPoolStuckClient checks that clients that stop reading do not
// hold the pool's writers: more stuck streams than writers, and a stream
// that reads still gets its events; once a stuck client reads again it
// gets every event, in order.
func TestRawPoolStuckClient(t *testing.T) {
	p := newRawPool(time.Hour)
	// A pipe has no buffer: every write to a client that does not read
	// blocks, until the write deadline.
	stuck := make([]*poolStream, 2*maxRawWriters()+1)
	for i := range stuck {
		stuck[i] = addPoolStream(t, p)
	}
	live := addPoolStream(t, p)
	liveRead := readAsync(live.client)
	const events = 50
	for i := 1; i <= events; i++ {
		ev := leaderEvent(i)
		for _, s := range stuck {
			s.st.send(ev)
		}
		live.st.send(ev)
	}
	live.st.end(ErrTestEnded)
	r := waitRead(t, "the live stream", liveRead)
	checkInOrder(t, "the live stream", r.ids, events)

	// Half of them end before their client reads again, so that the
	// write that times out may hold their last events and error event.
	for i, s := range stuck {
		if i%2 == 0 {
			s.st.end(ErrTestEnded)
		}
	}
	for i, s := range stuck {
		ch := readAsync(s.client)
		s.st.end(ErrTestEnded)
		name := "stuck stream " + strconv.Itoa(i)
		r := waitRead(t, name, ch)
		checkInOrder(t, name, r.ids, events)
		if !strings.Contains(r.errData, "test ended") {
			t.Fatalf("%s: final error event %q", name, r.errData)
		}
	}
	waitPoolEmpty(t, p)
}

// TestRawPoolStuckClientLastWrite checks a stream whose last write (its
// events and its error event, taken at once) is not taken within the
// write timeout: the client still gets all of it when it reads again.
func TestRawPoolStuckClientLastWrite(t *testing.T) {
	p := newRawPool(time.Hour)
	server, client := net.Pipe()
	t.Cleanup(func() { client.Close() })
	st := &fakeStream{}
	const events = 20
	for i := 1; i <= events; i++ {
		st.send(leaderEvent(i))
	}
	st.end(ErrTestEnded)
	p.add(server, st, st)
	// Read only once the write has timed out (a pipe takes nothing until
	// it is read) and the stream has a goroutine of its own.
	waitUntil(t, "the stream's write to time out", func() bool { return poolDetached(p) })
	r := waitRead(t, "the stream", readAsync(client))
	checkInOrder(t, "the stream", r.ids, events)
	if !strings.Contains(r.errData, "test ended") {
		t.Fatalf("final error event %q", r.errData)
	}
	waitPoolEmpty(t, p)
}

// TestRawPoolKeepAlive checks that an idle pooled stream gets keep-alive
// comments, and a client gone ends its stream.
func TestRawPoolKeepAlive(t *testing.T) {
	p := newRawPool(20 * time.Millisecond)
	s := addPoolStream(t, p)
	br := bufio.NewReader(s.client)
	for range 3 {
		s.client.SetReadDeadline(time.Now().Add(30 * time.Second))
		line, err := br.ReadString('\n')
		if err != nil || line != ":\n" {
			t.Fatalf("read %q, %v; want a keep-alive comment", line, err)
		}
		if line, err = br.ReadString('\n'); err != nil || line != "\n" {
			t.Fatalf("read %q, %v; want the comment's blank line", line, err)
		}
	}
	s.client.Close()
	// The next keep-alive fails to write, which ends the stream.
	waitUntil(t, "the stream of a client gone to be closed", func() bool {
		s.st.mu.Lock()
		defer s.st.mu.Unlock()
		return s.st.closed
	})
	waitPoolEmpty(t, p)
}

// poolDetached reports whether p holds a stream that has a goroutine of
// its own.
func poolDetached(p *rawPool) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for s := range p.streams {
		if rs, ok := s.(*rawStream); ok && rs.detached.Load() {
			return true
		}
	}
	return false
}

// waitPoolEmpty waits until every stream of p has left it.
func waitPoolEmpty(t *testing.T, p *rawPool) {
	t.Helper()
	waitUntil(t, "every stream to leave the pool", func() bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		return len(p.streams) == 0
	})
}

// waitUntil polls cond until it holds, failing the test after a deadline
// sized for a machine whose cores other jobs hold. The pool's state has no
// event to wait on, so it is polled.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited 30s for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
