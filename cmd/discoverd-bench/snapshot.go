package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"
)

// snapshot: a service of --large-instances instances, then heartbeats of
// them and new registrations, each for --duration, first alone and then
// while backups of the whole registry (GET /raft/snapshot) are taken one
// after another from the first server: what a backup costs the traffic
// that must not stall.
func runSnapshot(ctx context.Context, b *bench) []Result {
	const name = "snapshot"
	svc, cleanup, err := b.createService(ctx, name)
	if err != nil {
		return failed(name, err)
	}
	defer cleanup()
	n := b.cfg.large
	if _, err := b.fill(ctx, svc, "l-", n); err != nil {
		return failed(name, err)
	}
	conc := min(b.cfg.concurrency, n)
	heartbeat := b.heartbeatOp(svc, "l-", int64(n))
	hbIdle := b.load(ctx, "heartbeating, no backup", conc, b.cfg.duration, 0, heartbeat)
	regIdle := b.load(ctx, "registering, no backup", conc, b.cfg.duration, 0, b.registerOp(svc, "r1-"))

	saveCtx, stopSaving := context.WithCancel(ctx)
	var (
		wg    sync.WaitGroup
		saves samples
		size  int64
		errs  int64
		first error
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for saveCtx.Err() == nil {
			start := time.Now()
			got, err := b.saveSnapshot(saveCtx)
			if saveCtx.Err() != nil {
				return
			}
			if err != nil {
				errs++
				if first == nil {
					first = err
				}
				continue
			}
			saves.add(time.Since(start))
			size = got
		}
	}()
	hbDuring := b.load(ctx, "heartbeating while backing up", conc, b.cfg.duration, 0, heartbeat)
	regDuring := b.load(ctx, "registering while backing up", conc, b.cfg.duration, 0, b.registerOp(svc, "r2-"))
	stopSaving()
	wg.Wait()

	// The row is the heartbeats during the backups; the note holds the
	// same traffic without them, the registrations, and the backups.
	r := loadRow(name, hbDuring)
	if r.Error != "" {
		return []Result{r}
	}
	if len(saves) == 0 {
		r.Error = fmt.Sprintf("no backup completed (%d failed): %v", errs, first)
		return []Result{r}
	}
	r.Errors += hbIdle.errs + regIdle.errs + regDuring.errs + errs
	line := func(l loadResult) string {
		s := l.lat.summarize()
		return fmt.Sprintf("%.0f/s p99 %.1f ms max %.1f ms", l.rate(), *ms(s.p99), *ms(s.max))
	}
	save := saves.summarize()
	r.Note = fmt.Sprintf("heartbeats of %d instances during backups (row) vs none: %s; registrations during: %s, none: %s; "+
		"%d backups of %.1f MB, each p50 %.0f ms max %.0f ms",
		n, line(hbIdle), line(regDuring), line(regIdle), len(saves), float64(size)/1e6, *ms(save.p50), *ms(save.max))
	if first != nil {
		r.Note += "; first backup error: " + first.Error()
	}
	return []Result{r}
}

// saveSnapshot reads one backup from the first server to the end and
// returns its size.
func (b *bench) saveSnapshot(ctx context.Context) (int64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, b.servers[0].base+"/raft/snapshot", nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return 0, httpError(resp.StatusCode, body)
	}
	return io.Copy(io.Discard, resp.Body)
}
