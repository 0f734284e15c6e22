package main

import (
	"math"
	"slices"
	"time"
)

// samples collects latencies. Each load worker keeps its own and they are
// merged once at the end, so recording costs one append and no lock.
// Percentiles are exact (nearest rank over the sorted samples): a run of a
// few million samples sorts in well under a second, and the samples may be
// negative (detect reports time - TTL).
type samples []time.Duration

func (s *samples) add(d time.Duration) { *s = append(*s, d) }

func merge(parts []samples) samples {
	n := 0
	for _, p := range parts {
		n += len(p)
	}
	out := make(samples, 0, n)
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// summary is what a row reports of a set of samples.
type summary struct {
	n             int
	p50, p99, max time.Duration
}

func (s samples) summarize() summary {
	if len(s) == 0 {
		return summary{}
	}
	sorted := slices.Clone(s)
	slices.Sort(sorted)
	return summary{
		n:   len(sorted),
		p50: percentile(sorted, 50),
		p99: percentile(sorted, 99),
		max: sorted[len(sorted)-1],
	}
}

// percentile is the nearest-rank percentile p (0-100] of sorted.
func percentile(sorted []time.Duration, p float64) time.Duration {
	rank := int(math.Ceil(p / 100 * float64(len(sorted))))
	rank = min(max(rank, 1), len(sorted))
	return sorted[rank-1]
}

func ms(d time.Duration) *float64 {
	v := math.Round(float64(d)/float64(time.Millisecond)*1000) / 1000
	return &v
}

func f64(v float64) *float64 { return &v }

// setLatency fills a result's latency fields from samples.
func (r *Result) setLatency(s samples) {
	sum := s.summarize()
	if sum.n == 0 {
		return
	}
	r.Samples = sum.n
	r.P50, r.P99, r.Max = ms(sum.p50), ms(sum.p99), ms(sum.max)
}
