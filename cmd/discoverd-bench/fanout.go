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

// sseClients gives each SSE stream of a fanout its HTTP client. Streams are
// spread over loopback source addresses (127.0.0.2, 127.0.0.3, ...),
// --streams-per-addr each, so that a server's per-client limit
// (--max-conns-per-client) holds; over h2c the streams of one address share
// connections (up to the server's concurrent-stream limit each).
type sseClients struct {
	perAddr int
	spread  bool
	h2      bool
	mu      sync.Mutex
	clients map[int]*http.Client
}

func (b *bench) newSSEClients(h2 bool) *sseClients {
	host, _, _ := net.SplitHostPort(b.servers[0].host)
	ip := net.ParseIP(host)
	return &sseClients{
		perAddr: b.cfg.streamsPerAddr,
		spread:  ip != nil && ip.IsLoopback() && ip.To4() != nil,
		h2:      h2,
		clients: map[int]*http.Client{},
	}
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
		if j >= 250*254 {
			return nil, fmt.Errorf("more than %d source addresses needed; raise --streams-per-addr", 250*254)
		}
		// 127.0.0.2 .. 127.0.0.254, then 127.0.1.1 ...
		d.LocalAddr = &net.TCPAddr{IP: net.IPv4(127, 0, byte(j/253), byte(2+j%253))}
	}
	tr := &http.Transport{DialContext: d.DialContext, MaxIdleConnsPerHost: -1, ResponseHeaderTimeout: 30 * time.Second}
	if c.h2 {
		var p http.Protocols
		p.SetUnencryptedHTTP2(true)
		tr.Protocols = &p
	}
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
// HTTP/1.1 (a connection each) or h2c (many per connection). It also reports
// the server's RSS growth per open stream, read before the streams open and
// after, --settle later.
func (b *bench) fanoutSSE(ctx context.Context, name string, h2 bool) []Result {
	svc, cleanup, err := b.prepareFanout(ctx, name)
	if err != nil {
		return failed(name, err)
	}
	defer cleanup()
	k := b.cfg.subscribers
	clients := b.newSSEClients(h2)
	defer clients.close()
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
				return failed(name, fmt.Errorf("opening %d streams: %s: %v", k, note, err))
			}
			return failed(name, fmt.Errorf("opening %d streams: %v", k, err))
		}
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
	proto := "HTTP/1.1"
	if h2 {
		proto = "h2c"
	}
	for i := range rows {
		rows[i].BytesPerStream = perStream
		if rows[i].Error == "" {
			rows[i].Note += fmt.Sprintf("; %s from %d source address(es)", proto, clients.addrs(k))
		}
	}
	return rows
}
