package dnsapi

import (
	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics counts the DNS server's work. Every counter it touches per query
// is resolved when it is made, so counting costs an atomic add.
type Metrics struct {
	queries   *prometheus.CounterVec
	udp, tcp  prometheus.Counter
	responses *prometheus.CounterVec
	byRcode   map[int]prometheus.Counter
	other     prometheus.Counter
	records   prometheus.Counter
	truncated prometheus.Counter
	recursion prometheus.Counter
	rejected  prometheus.Counter
}

// rcodes are the response codes counted under their own label.
var rcodes = []int{dns.RcodeSuccess, dns.RcodeFormatError, dns.RcodeServerFailure, dns.RcodeNameError, dns.RcodeNotImplemented, dns.RcodeRefused}

// NewMetrics makes the counters (unregistered).
func NewMetrics() *Metrics {
	m := &Metrics{
		queries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "discoverd_dns_queries_total", Help: "DNS queries received, by transport.",
		}, []string{"transport"}),
		responses: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "discoverd_dns_responses_total", Help: "DNS responses sent, by response code.",
		}, []string{"rcode"}),
		records: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "discoverd_dns_answer_records_total", Help: "Records sent in the answer sections of DNS responses.",
		}),
		truncated: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "discoverd_dns_truncated_total", Help: "DNS responses cut to the client's buffer, with TC set.",
		}),
		recursion: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "discoverd_dns_recursed_total", Help: "DNS queries for names outside the zone answered by a recursor.",
		}),
		rejected: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "discoverd_dns_rejected_total", Help: "DNS messages rejected before they reached the resolver (malformed, not a query, not one question).",
		}),
		byRcode: make(map[int]prometheus.Counter, len(rcodes)),
	}
	m.udp = m.queries.WithLabelValues("udp")
	m.tcp = m.queries.WithLabelValues("tcp")
	for _, rc := range rcodes {
		m.byRcode[rc] = m.responses.WithLabelValues(dns.RcodeToString[rc])
	}
	m.other = m.responses.WithLabelValues("other")
	return m
}

// Collectors are the counters, to register with the node's registry.
func (m *Metrics) Collectors() []prometheus.Collector {
	return []prometheus.Collector{m.queries, m.responses, m.records, m.truncated, m.recursion, m.rejected}
}

func (m *Metrics) query(tcp bool) {
	if tcp {
		m.tcp.Inc()
	} else {
		m.udp.Inc()
	}
}

func (m *Metrics) answered(rcode, records int, truncated bool) {
	if c, ok := m.byRcode[rcode]; ok {
		c.Inc()
	} else {
		m.other.Inc()
	}
	if records > 0 {
		m.records.Add(float64(records))
	}
	if truncated {
		m.truncated.Inc()
	}
}

func (m *Metrics) recursed() { m.recursion.Inc() }

func (m *Metrics) reject() { m.rejected.Inc() }
