package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/discoverd/discoverd/api"
)

// sseClients gives each HTTP/1.1 SSE stream of a fanout its HTTP client.
// Streams are spread over loopback source addresses (127.0.0.2, 127.0.0.3,
// ...), --streams-per-addr each, so that a server's per-client limit
// (--max-conns-per-client) holds.
type sseClients struct {
	perAddr int
	spread  bool
	mu      sync.Mutex
	clients map[int]*http.Client
}

func (b *bench) newSSEClients() *sseClients {
	return &sseClients{
		perAddr: b.cfg.streamsPerAddr,
		spread:  b.spreadSources(),
		clients: map[int]*http.Client{},
	}
}

// spreadSources says whether streams can be spread over loopback source
// addresses: when the (first) server listens on an IPv4 loopback address.
func (b *bench) spreadSources() bool {
	host, _, _ := net.SplitHostPort(b.servers[0].host)
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback() && ip.To4() != nil
}

// sourceAddr is the j-th loopback source address: 127.0.0.2 .. 127.0.0.254,
// then 127.0.1.2 ...
func sourceAddr(j int) (*net.TCPAddr, error) {
	if j >= 250*254 {
		return nil, fmt.Errorf("more than %d source addresses needed; raise --streams-per-addr", 250*254)
	}
	return &net.TCPAddr{IP: net.IPv4(127, 0, byte(j/253), byte(2+j%253))}, nil
}

// addrs is how many source addresses k streams use.
func (c *sseClients) addrs(k int) int {
	if !c.spread {
		return 1
	}
	return (k + c.perAddr - 1) / c.perAddr
}

// client is stream i's client.
func (c *sseClients) client(i int) (*http.Client, error) {
	j := 0
	if c.spread {
		j = i / c.perAddr
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if hc := c.clients[j]; hc != nil {
		return hc, nil
	}
	d := &net.Dialer{Timeout: 10 * time.Second}
	if c.spread {
		la, err := sourceAddr(j)
		if err != nil {
			return nil, err
		}
		d.LocalAddr = la
	}
	tr := &http.Transport{DialContext: d.DialContext, MaxIdleConnsPerHost: -1, ResponseHeaderTimeout: 30 * time.Second}
	hc := &http.Client{Transport: tr}
	c.clients[j] = hc
	return hc, nil
}

func (c *sseClients) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, hc := range c.clients {
		hc.CloseIdleConnections()
	}
}

// fileLimitNote says when an error is the open-file limit of this process
// (EMFILE) or of the server (connections reset or refused once it is out).
func fileLimitNote(err error, opened int64) string {
	var lim syscall.Rlimit
	syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim)
	switch {
	case errors.Is(err, syscall.EMFILE) || strings.Contains(err.Error(), "too many open files"):
		return fmt.Sprintf("hit the harness's open-file limit (%d) after %d streams", lim.Cur, opened)
	case errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.ECONNREFUSED) || strings.Contains(err.Error(), "EOF"):
		return fmt.Sprintf("the server closed or refused connections after %d streams (at its open-file limit?)", opened)
	}
	return ""
}

func runFanoutSSE(ctx context.Context, b *bench) []Result {
	return b.fanoutSSE(ctx, "fanout-sse", false)
}

func runFanoutSSEH2(ctx context.Context, b *bench) []Result {
	return b.fanoutSSE(ctx, "fanout-sse-h2", true)
}

// fanout-sse and fanout-sse-h2: --subscribers SSE streams of the service's
// leader (GET /services/{svc}/leader, Accept: text/event-stream), over
// HTTP/1.1 (a connection each) or h2c (many per connection, read by the raw
// HTTP/2 client of h2fanout.go). It also reports the server's RSS growth
// per open stream, read before the streams open and after, --settle later.
func (b *bench) fanoutSSE(ctx context.Context, name string, h2 bool) []Result {
	svc, cleanup, err := b.prepareFanout(ctx, name)
	if err != nil {
		return failed(name, err)
	}
	defer cleanup()
	k := b.cfg.subscribers
	pid := b.cfg.pid
	if pid == 0 {
		pid, _ = findListener(b.servers[0].host)
	}
	var before procMem
	if pid != 0 {
		before, _ = readMem(pid)
	}
	events := make(chan arrival, k*(b.cfg.rounds+2))
	errc := make(chan error, k)
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait()
	}()
	open := b.openSSEStreams
	if h2 {
		open = b.openH2Streams
	}
	note, err := open(ctx, &wg, svc, k, events, errc)
	if err != nil {
		return failed(name, fmt.Errorf("opening %d streams: %v", k, err))
	}
	var perStream *float64
	if pid != 0 {
		select {
		case <-time.After(b.cfg.settle):
		case <-ctx.Done():
			return failed(name, ctx.Err())
		}
		if after, err := readMem(pid); err == nil {
			v := float64(after.rss-before.rss) / float64(k)
			perStream = &v
		}
	}
	rows := b.fanout(ctx, name, svc, k, events, errc, true)
	for i := range rows {
		rows[i].BytesPerStream = perStream
		if rows[i].Error == "" {
			rows[i].Note += "; " + note
		}
	}
	return rows
}

// openSSEStreams opens k HTTP/1.1 streams of svc's leader, a goroutine
// each (added to wg, ended by ctx), that send each leader event to events
// and a stream's failure to errc. It returns once all are open and have
// read their current state, with the note for the result's row.
func (b *bench) openSSEStreams(ctx context.Context, wg *sync.WaitGroup, svc string, k int, events chan<- arrival, errc chan<- error) (string, error) {
	clients := b.newSSEClients()
	wg.Add(1)
	go func() {
		defer wg.Done()
		<-ctx.Done()
		clients.close()
	}()
	var opened atomic.Int64
	b.progress.set("opening streams", &opened, int64(k), 0)
	// Open the streams 64 at a time.
	sem := make(chan struct{}, 64)
	ready := make(chan error, k)
	for i := 0; i < k; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			sem <- struct{}{}
			hc, err := clients.client(i)
			var st *sseStream
			if err == nil {
				st, err = b.openSSEWith(ctx, hc, i, "/services/"+svc+"/leader")
			}
			if err == nil {
				if err = st.untilCurrent(); err != nil {
					st.close()
				}
			}
			<-sem
			ready <- err
			if err != nil {
				return
			}
			opened.Add(1)
			defer st.close()
			for {
				ev, err := st.next()
				if err != nil {
					if ctx.Err() == nil {
						select {
						case errc <- fmt.Errorf("stream %d: %v", i, err):
						default:
						}
					}
					return
				}
				if ev.Kind == api.EventLeader && ev.Instance != nil {
					if !deliver(ctx, events, arrival{sub: i, kind: ev.Kind, id: ev.Instance.ID, at: time.Now()}) {
						return
					}
				}
			}
		}(i)
	}
	for i := 0; i < k; i++ {
		if err := <-ready; err != nil {
			if note := fileLimitNote(err, opened.Load()); note != "" {
				return "", fmt.Errorf("%s: %v", note, err)
			}
			return "", err
		}
	}
	return fmt.Sprintf("HTTP/1.1 from %d source address(es)", clients.addrs(k)), nil
}
