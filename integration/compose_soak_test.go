//go:build compose

// The randomized fault soak (make test-soak, TESTING.md): the workload and
// checks of the fault scenarios (compose_workload_test.go) run for
// DISCOVERD_SOAK_DURATION (default 10m) while the nemesis
// (compose_nemesis_test.go) injects random faults one at a time. It brings
// up its own project, "discoverdsoak" on ports 213xx/243xx, so that it can
// run beside the fault scenarios. DISCOVERD_SOAK_SEED replays a run's
// choices of faults, targets and durations.
//
//	go test -tags compose -count=1 -timeout 40m -v -run TestSoak ./integration

package integration

import (
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/discoverd/discoverd/integration/history"
)

var soakSpec = composeSpec{Project: "discoverdsoak", HTTPBase: 21311, NATSBase: 24311}

func soakSettings(t *testing.T) (time.Duration, uint64) {
	d := 10 * time.Minute
	if s := os.Getenv("DISCOVERD_SOAK_DURATION"); s != "" {
		var err error
		if d, err = time.ParseDuration(s); err != nil || d <= 0 {
			t.Fatalf("DISCOVERD_SOAK_DURATION=%q: want a positive duration such as 10m", s)
		}
	}
	seed := rand.Uint64() >> 1
	if s := os.Getenv("DISCOVERD_SOAK_SEED"); s != "" {
		var err error
		if seed, err = strconv.ParseUint(s, 10, 64); err != nil {
			t.Fatalf("DISCOVERD_SOAK_SEED=%q: want an unsigned integer", s)
		}
	}
	return d, seed
}

func TestSoak(t *testing.T) {
	duration, seed := soakSettings(t)
	fmt.Printf("soak: seed %d (DISCOVERD_SOAK_SEED=%d replays it), duration %v\n", seed, seed, duration)
	c := newComposeClusterOf(t, soakSpec)
	w := startComposeWorkload(t, c)
	// A long history with many writes of unknown outcome: give porcupine
	// time rather than call a partition inconclusive.
	w.checkTimeout = 2 * time.Minute
	m := newNemesis(c, w, seed)

	ops, lost, expired, linearizable := -1, -1, -1, false
	defer func() {
		var kinds []string
		for _, k := range faultKinds {
			kinds = append(kinds, fmt.Sprintf("%s=%d", k, m.counts[k]))
		}
		if ops < 0 {
			ops = len(w.rec.Ops())
		}
		if t.Failed() {
			c.mu.Lock()
			timeline := strings.Join(c.timeline, "\n  ")
			c.mu.Unlock()
			fmt.Printf("soak FAILED: seed %d (replay: DISCOVERD_SOAK_SEED=%d DISCOVERD_SOAK_DURATION=%v make test-soak)\nfault timeline:\n  %s\n",
				seed, seed, duration, timeline)
		}
		yes := "no"
		if linearizable {
			yes = "yes"
		}
		fmt.Printf("soak: %d operations, %d faults (%s), %s lost, %s wrongly expired, linearizable: %s\n",
			ops, m.total, strings.Join(kinds, " "), count(lost), count(expired), yes)
	}()

	// A calm start, then faults until the time is up.
	w.run(5 * time.Second)
	end := time.Now().Add(duration)
	for time.Now().Before(end) {
		m.next()
		w.run(time.Duration(2000+m.rng.IntN(3000)) * time.Millisecond)
	}
	w.Finish(func(r *composeReport) {
		ops = len(r.ops)
		linearizable = len(r.hist.Problems) == 0 && len(r.hist.Inconclusive) == 0
		lostWrites := soakLost(r)
		for _, p := range lostWrites {
			r.problem("lost acknowledged write: %s", p)
		}
		wrongly := soakWronglyExpired(r)
		for _, p := range wrongly {
			r.problem("wrongly expired: %s", p)
		}
		lost, expired = len(lostWrites), len(wrongly)
		r.stat("soak: %d faults, %d lost acknowledged writes, %d wrongly expired instances", m.total, lost, expired)
	})
}

// count prints -1 (not measured: the run stopped early) as "?".
func count(n int) string {
	if n < 0 {
		return "?"
	}
	return strconv.Itoa(n)
}

// expiryLimit is the gap in an instance's acknowledged heartbeats after
// which the server may expire it (history.Config's TTL minus its slack).
func expiryLimit(cfg history.Config) time.Duration {
	slack := cfg.Slack
	if slack <= 0 {
		slack = 250 * time.Millisecond
	}
	return cfg.TTL - slack
}

// expiryQueueLag bounds how long before its entry gets a Raft index the
// leader may decide an expiry (the time the command waits to be appended).
const expiryQueueLag = time.Second

// soakLost lists acknowledged writes that the final state does not hold:
// a service meta older than the last acknowledged meta write; an instance
// deregistered with an acknowledgement yet still there as the same
// registration; an instance whose last acknowledged heartbeat came less
// than a TTL before the final read, missing from it or older there.
func soakLost(r *composeReport) []string {
	w := r.w
	var out []string
	var finals map[string]map[string]history.Inst
	for i := range r.ops {
		// The final reads are the last consistent reads of each service.
		op := &r.ops[i]
		if op.Kind != history.ReadInstances || op.Outcome != history.OK || op.Call.Before(w.settled) {
			continue
		}
		if finals == nil {
			finals = map[string]map[string]history.Inst{}
		}
		m := map[string]history.Inst{}
		for _, in := range op.Instances {
			m[in.ID] = in
		}
		finals[op.Service] = m
	}
	if finals == nil {
		return []string{"no final read of the instances after the heal"}
	}
	var finalCall time.Time
	for i := range r.ops {
		if op := &r.ops[i]; op.Kind == history.ReadInstances && op.Outcome == history.OK && !op.Call.Before(w.settled) {
			finalCall = op.Call
		}
	}
	limit := expiryLimit(r.cfg)
	lastMeta := map[string]*history.Op{}
	lastAck := map[string]*history.Op{}
	for i := range r.ops {
		op := &r.ops[i]
		if op.Outcome != history.OK {
			continue
		}
		key := op.Service + "/" + op.Instance
		switch op.Kind {
		case history.SetMeta:
			if l := lastMeta[op.Service]; l == nil || op.Index > l.Index {
				lastMeta[op.Service] = op
			}
		case history.Deregister:
			if got, ok := finals[op.Service][op.Instance]; ok && got.Index < op.Index {
				out = append(out, fmt.Sprintf("%s: the final read still holds %s@%d", op, op.Instance, got.Index))
			}
		case history.Register:
			if (r.cfg.Discount == nil || !r.cfg.Discount(op)) && (lastAck[key] == nil || op.Call.After(lastAck[key].Call)) {
				lastAck[key] = op
			}
		}
	}
	// The final meta reads, taken after the last meta write.
	finalMeta := map[string]*history.Op{}
	for i := range r.ops {
		if op := &r.ops[i]; op.Kind == history.GetMeta && op.Outcome == history.OK && !op.Call.Before(w.settled) {
			finalMeta[op.Service] = op
		}
	}
	for s, op := range lastMeta {
		switch fm := finalMeta[s]; {
		case fm == nil:
			out = append(out, fmt.Sprintf("%s: no final read of the meta of %s", op, s))
		case fm.Index < op.Index:
			out = append(out, fmt.Sprintf("%s: the final meta of %s is the older %s@%d", op, s, fm.MetaData, fm.Index))
		}
	}
	for _, in := range w.instances {
		if in.closed || in.overNATS {
			continue
		}
		op := lastAck[in.service+"/"+in.id]
		if op == nil || finalCall.Sub(op.Call) >= limit {
			continue // a gap of a TTL at the end: it may have expired
		}
		got, ok := finals[in.service][in.id]
		switch {
		case !ok:
			out = append(out, fmt.Sprintf("%s (%v before the final read): missing from the final read", op, finalCall.Sub(op.Call).Round(time.Millisecond)))
		case got.Index < op.Index:
			out = append(out, fmt.Sprintf("%s: the final read holds the older %s@%d", op, in.id, got.Index))
		}
	}
	slices.Sort(out)
	return out
}

// soakWronglyExpired lists the instances that went down while their
// heartbeats kept them alive: a down event (from any voter's stream) of a
// registration that the workload did not deregister, at a time when no
// gap of a TTL in the registration's acknowledged heartbeats (those of a
// node under fault do not count) allowed its expiry.
//
// When the expiry happened is bounded by the Raft index of its entry: after
// the call of every acknowledged meta write with a lower index (that write
// made its own entry; less expiryQueueLag, as the leader decides an expiry
// a moment before the entry takes its index), and before the answer of any
// acknowledged write or heartbeat naming a higher index and before the
// first stream received it.
func soakWronglyExpired(r *composeReport) []string {
	type key struct {
		service, id string
		inst, at    uint64
	}
	downs := map[key]time.Time{}
	for _, raw := range r.w.raws {
		for _, d := range raw.Downs() {
			k := key{d.ev.Service, d.ev.Instance.ID, d.ev.Instance.Index, d.ev.Index}
			if seen, ok := downs[k]; !ok || d.at.Before(seen) {
				downs[k] = d.at
			}
		}
	}
	overNATS := map[string]bool{}
	for _, in := range r.w.instances {
		if in.overNATS {
			overNATS[in.service+"/"+in.id] = true
		}
	}
	limit := expiryLimit(r.cfg)
	var out []string
	for k, received := range downs {
		if overNATS[k.service+"/"+k.id] {
			continue // its heartbeats are not recorded
		}
		lo, hi := time.Time{}, received
		var regs, acks []*history.Op
		deregistered := false
		for i := range r.ops {
			op := &r.ops[i]
			if op.Kind == history.SetMeta && op.Outcome == history.OK && op.Index < k.at && op.Call.After(lo) {
				lo = op.Call
			}
			if op.Outcome == history.OK && (op.Kind == history.SetMeta || op.Kind == history.Register) && op.Index > k.at && op.Return.Before(hi) {
				hi = op.Return
			}
			if op.Service != k.service || op.Instance != k.id {
				continue
			}
			switch op.Kind {
			case history.Deregister:
				deregistered = deregistered || op.Call.Before(received)
			case history.Register:
				regs = append(regs, op)
				if op.Outcome == history.OK && op.Index == k.inst && (r.cfg.Discount == nil || !r.cfg.Discount(op)) {
					acks = append(acks, op)
				}
			}
		}
		lo = lo.Add(-expiryQueueLag)
		if deregistered || len(acks) == 0 {
			continue // a deregistration, or no heartbeat of it acknowledged
		}
		// The registration began no sooner than the last acknowledged
		// heartbeat of an earlier one (which was expired after that).
		from := time.Time{}
		for _, op := range regs {
			if op.Outcome == history.OK && op.Index < k.inst && op.Call.After(from) {
				from = op.Call
			}
		}
		if from.IsZero() {
			from = regs[0].Call
			for _, op := range regs {
				if op.Call.Before(from) {
					from = op.Call
				}
			}
		}
		// The windows in which the server may have expired it: from a TTL
		// into a gap in the acknowledged heartbeats until the heartbeat that
		// ends the gap (it may have been heard as late as its answer).
		slices.SortFunc(acks, func(a, b *history.Op) int { return a.Call.Compare(b.Call) })
		var allowed []window
		for _, a := range acks {
			if a.Return.Sub(from) >= limit {
				allowed = append(allowed, window{from.Add(limit), a.Return})
			}
			if a.Call.After(from) {
				from = a.Call
			}
		}
		allowed = append(allowed, window{from.Add(limit), time.Unix(0, math.MaxInt64)})
		possible := false
		for _, a := range allowed {
			if !a.from.After(hi) && !a.to.Before(lo) {
				possible = true
				break
			}
		}
		if !possible {
			last := acks[len(acks)-1]
			for _, a := range acks {
				if a.Call.After(hi) {
					break
				}
				last = a
			}
			out = append(out, fmt.Sprintf("%s/%s@%d went down at index %d, between %s and %s, yet its heartbeats were acknowledged within the TTL (the last before: %s)",
				k.service, k.id, k.inst, k.at, lo.Format("15:04:05.000"), hi.Format("15:04:05.000"), last))
		}
	}
	slices.Sort(out)
	return out
}
