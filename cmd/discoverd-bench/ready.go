package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/discoverd/discoverd/api"
	"github.com/nats-io/nats.go"
)

// awaitReady waits up to --wait until the servers can be measured together:
// every --http server answers /ping and reports a healthy status naming the
// same Raft leader, all have applied the same Raft index, and a message
// published on any --nats server reaches a subscriber on every other one.
// Servers just started answer /ping well before that: they elect a leader,
// announce their NATS addresses through Raft and only then dial their NATS
// routes, and a run that starts earlier measures 503s and a half-connected
// cluster instead of the servers.
func (b *bench) awaitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, b.cfg.wait)
	defer cancel()
	b.progress.set("waiting for the servers to be ready", nil, 0, b.cfg.wait)
	var last error
	for {
		if last = b.clusterStatus(ctx); last == nil {
			break
		}
		if !sleepCtx(ctx, 100*time.Millisecond) {
			return fmt.Errorf("servers not ready within --wait %s: %v", b.cfg.wait, last)
		}
	}
	if len(b.cfg.nats) < 2 {
		return nil
	}
	if err := b.awaitNATSMesh(ctx); err != nil {
		return fmt.Errorf("servers not ready within --wait %s: %v", b.cfg.wait, err)
	}
	return nil
}

// clusterStatus checks one round of /ping and /.well-known/status answers.
func (b *bench) clusterStatus(ctx context.Context) error {
	sts := make([]api.Status, len(b.servers))
	for i, s := range b.servers {
		if _, err := b.get(ctx, s.base, "/ping"); err != nil {
			return err
		}
		body, err := b.get(ctx, s.base, "/.well-known/status")
		if err != nil {
			return err
		}
		if err := json.Unmarshal(body, &sts[i]); err != nil {
			return fmt.Errorf("%s: malformed status %q: %v", s.base, body, err)
		}
		if !sts[i].Healthy || sts[i].Leader == "" {
			return fmt.Errorf("%s: no Raft leader known yet (role %s)", s.base, sts[i].Role)
		}
	}
	leaders := 0
	var top uint64
	for i, st := range sts {
		if st.Leader != sts[0].Leader {
			return fmt.Errorf("%s names leader %s, %s names %s", b.servers[0].base, sts[0].Leader, b.servers[i].base, st.Leader)
		}
		if st.Role == "leader" {
			leaders++
		}
		top = max(top, st.AppliedIndex)
	}
	if leaders > 1 {
		return fmt.Errorf("%d servers report the role leader", leaders)
	}
	for i, st := range sts {
		if st.AppliedIndex < top {
			return fmt.Errorf("%s has applied index %d of %d", b.servers[i].base, st.AppliedIndex, top)
		}
	}
	return nil
}

// get fetches path from the server at base, within 2 s, and fails on a
// non-2xx answer.
func (b *bench) get(ctx context.Context, base, path string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	return b.callAt(ctx, base, http.MethodGet, path, nil)
}

// awaitNATSMesh waits until a message published on each NATS server reaches
// a subscriber on each of the others, that is until the routes between them
// are up and have carried the subscriptions' interest. Each connection
// talks to its own server only.
func (b *bench) awaitNATSMesh(ctx context.Context) error {
	n := len(b.cfg.nats)
	conns := make([]*nats.Conn, n)
	defer func() {
		for _, nc := range conns {
			if nc != nil {
				nc.Close()
			}
		}
	}()
	var tag [4]byte
	rand.Read(tag[:])
	prefix := "discoverd-bench.ready." + hex.EncodeToString(tag[:]) + "."
	var mu sync.Mutex
	seen := make(map[[2]int]bool) // {publisher, subscriber}
	for i, u := range b.cfg.nats {
		var nc *nats.Conn
		var err error
		for {
			nc, err = nats.Connect(u, nats.Name("discoverd-bench-ready"), nats.Timeout(2*time.Second), nats.NoReconnect())
			if err == nil {
				break
			}
			if !sleepCtx(ctx, 100*time.Millisecond) {
				return fmt.Errorf("connecting to NATS %s: %v", u, err)
			}
		}
		conns[i] = nc
		sub := i
		if _, err := nc.Subscribe(prefix+strconv.Itoa(i), func(m *nats.Msg) {
			if from, err := strconv.Atoi(string(m.Data)); err == nil {
				mu.Lock()
				seen[[2]int{from, sub}] = true
				mu.Unlock()
			}
		}); err != nil {
			return fmt.Errorf("subscribing on NATS %s: %v", u, err)
		}
		if err := nc.Flush(); err != nil {
			return fmt.Errorf("NATS %s: %v", u, err)
		}
	}
	for {
		var missing []string
		for from, nc := range conns {
			for to := range conns {
				if from == to {
					continue
				}
				mu.Lock()
				ok := seen[[2]int{from, to}]
				mu.Unlock()
				if ok {
					continue
				}
				missing = append(missing, b.cfg.nats[from]+" -> "+b.cfg.nats[to])
				if err := nc.Publish(prefix+strconv.Itoa(to), []byte(strconv.Itoa(from))); err != nil {
					return fmt.Errorf("publishing on NATS %s: %v", b.cfg.nats[from], err)
				}
			}
			nc.Flush()
		}
		if len(missing) == 0 {
			return nil
		}
		if !sleepCtx(ctx, 100*time.Millisecond) {
			return fmt.Errorf("NATS messages do not get through the routes: %s", strings.Join(missing, ", "))
		}
	}
}

// sleepCtx sleeps for d and reports whether ctx is still live after it.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
