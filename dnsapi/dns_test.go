package dnsapi_test

import (
	"context"
	"fmt"
	"net"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/discoverd/discoverd/api"
	"github.com/discoverd/discoverd/dnsapi"
	"github.com/discoverd/discoverd/integration"
	"github.com/discoverd/discoverd/internal/testnode"
	"github.com/discoverd/discoverd/node"
)

// dnsServer is a real node with its DNS server on loopback.
type dnsServer struct {
	t    *testing.T
	n    *node.Node
	addr string
}

func startDNS(t *testing.T, ttl time.Duration, o dnsapi.Options) *dnsServer {
	t.Helper()
	ts := testnode.Start(t, testnode.Options{TTL: ttl})
	n := ts.Node()
	h := dnsapi.NewHandler(n, o)
	if err := n.RegisterMetrics(h.Metrics().Collectors()...); err != nil {
		t.Fatal(err)
	}
	return &dnsServer{t: t, n: n, addr: listen(t, h)}
}

func listen(t *testing.T, h *dnsapi.Handler) string {
	t.Helper()
	s, err := dnsapi.Listen("127.0.0.1:0", h)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s.Addr()
}

func (s *dnsServer) addService(name string) {
	s.t.Helper()
	if _, err := s.n.AddService(context.Background(), name, api.ServiceConfig{}); err != nil {
		s.t.Fatal(err)
	}
}

func (s *dnsServer) register(service, id, addr, proto string) *api.Instance {
	s.t.Helper()
	inst := &api.Instance{ID: id, Addr: addr, Proto: proto}
	if err := api.PrepareInstance(inst, id); err != nil {
		s.t.Fatal(err)
	}
	out, err := s.n.Heartbeat(context.Background(), service, inst)
	if err != nil {
		s.t.Fatal(err)
	}
	return out
}

// query asks the server over net ("udp" or "tcp"), with an EDNS0 buffer of
// edns bytes when it is not 0.
func query(t *testing.T, addr, network, name string, qtype uint16, edns uint16) *dns.Msg {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	if edns > 0 {
		m.SetEdns0(edns, false)
	}
	c := &dns.Client{Net: network, Timeout: 5 * time.Second, UDPSize: 65535}
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		r, _, err := c.Exchange(m, addr)
		if err == nil {
			return r
		}
		lastErr = err // a UDP packet lost on a busy machine
	}
	t.Fatalf("%s %s %s: %v", network, name, dns.TypeToString[qtype], lastErr)
	return nil
}

// render lists a section's records as sorted "TYPE data" strings.
func render(rrs []dns.RR) []string {
	var out []string
	for _, rr := range rrs {
		switch r := rr.(type) {
		case *dns.A:
			out = append(out, "A "+r.A.String())
		case *dns.AAAA:
			out = append(out, "AAAA "+r.AAAA.String())
		case *dns.CNAME:
			out = append(out, "CNAME "+r.Target)
		case *dns.SRV:
			out = append(out, fmt.Sprintf("SRV %d %d %d %s", r.Priority, r.Weight, r.Port, r.Target))
		case *dns.SOA:
			out = append(out, "SOA "+r.Ns)
		case *dns.OPT:
			continue
		default:
			out = append(out, rr.String())
		}
	}
	sort.Strings(out)
	return out
}

// TestDNSNames asks for every name and type of the zone over UDP and TCP.
func TestDNSNames(t *testing.T) {
	s := startDNS(t, time.Minute, dnsapi.Options{TTL: 7})
	s.addService("web")
	s.register("web", "i1", "10.0.0.1:80", "http")
	s.register("web", "i1b", "10.0.0.1:81", "http") // the same IP: one A record
	s.register("web", "i2", "10.0.0.2:8080", "http")
	s.register("web", "v6", "[fd00::1]:9000", "tcp")
	s.addService("ext")
	s.register("ext", "h", "db.example.net:5432", "tcp")
	s.addService("empty")

	const soa = "SOA ns.discoverd."
	webSRV := []string{"SRV 1 1 80 i1.web._i.discoverd.", "SRV 1 1 81 i1b.web._i.discoverd.", "SRV 1 1 8080 i2.web._i.discoverd.", "SRV 1 1 9000 v6.web._i.discoverd."}
	cases := []struct {
		name   string
		qtype  uint16
		rcode  int
		answer []string
		ns     []string
	}{
		{"web.discoverd.", dns.TypeA, dns.RcodeSuccess, []string{"A 10.0.0.1", "A 10.0.0.2"}, nil},
		{"WEB.Discoverd.", dns.TypeA, dns.RcodeSuccess, []string{"A 10.0.0.1", "A 10.0.0.2"}, nil},
		{"web.discoverd.", dns.TypeAAAA, dns.RcodeSuccess, []string{"AAAA fd00::1"}, nil},
		{"web.discoverd.", dns.TypeSRV, dns.RcodeSuccess, webSRV, nil},
		{"web.discoverd.", dns.TypeANY, dns.RcodeSuccess, append([]string{"A 10.0.0.1", "A 10.0.0.2", "AAAA fd00::1"}, webSRV...), nil},
		{"web.discoverd.", dns.TypeTXT, dns.RcodeSuccess, nil, []string{soa}},
		{"_web._http.discoverd.", dns.TypeSRV, dns.RcodeSuccess, webSRV[:3], nil},
		{"_web._http.discoverd.", dns.TypeA, dns.RcodeSuccess, []string{"A 10.0.0.1", "A 10.0.0.2"}, nil},
		{"_web._tcp.discoverd.", dns.TypeAAAA, dns.RcodeSuccess, []string{"AAAA fd00::1"}, nil},
		{"_web._tcp.discoverd.", dns.TypeA, dns.RcodeSuccess, nil, []string{soa}},
		{"_web._udp.discoverd.", dns.TypeSRV, dns.RcodeSuccess, nil, []string{soa}},
		{"leader.web.discoverd.", dns.TypeA, dns.RcodeSuccess, []string{"A 10.0.0.1"}, nil},
		{"leader.web.discoverd.", dns.TypeSRV, dns.RcodeSuccess, []string{"SRV 1 1 80 leader.web.discoverd."}, nil},
		{"leader.web.discoverd.", dns.TypeAAAA, dns.RcodeSuccess, nil, []string{soa}},
		{"i2.web._i.discoverd.", dns.TypeA, dns.RcodeSuccess, []string{"A 10.0.0.2"}, nil},
		{"v6.web._i.discoverd.", dns.TypeAAAA, dns.RcodeSuccess, []string{"AAAA fd00::1"}, nil},
		{"v6.web._i.discoverd.", dns.TypeA, dns.RcodeSuccess, nil, []string{soa}},
		{"ext.discoverd.", dns.TypeA, dns.RcodeSuccess, []string{"CNAME db.example.net."}, nil},
		{"ext.discoverd.", dns.TypeSRV, dns.RcodeSuccess, []string{"SRV 1 1 5432 db.example.net."}, nil},
		{"h.ext._i.discoverd.", dns.TypeAAAA, dns.RcodeSuccess, []string{"CNAME db.example.net."}, nil},
		{"empty.discoverd.", dns.TypeA, dns.RcodeSuccess, nil, []string{soa}},
		{"leader.empty.discoverd.", dns.TypeA, dns.RcodeSuccess, nil, []string{soa}},
		{"discoverd.", dns.TypeSOA, dns.RcodeSuccess, []string{soa}, nil},
		{"discoverd.", dns.TypeA, dns.RcodeSuccess, nil, []string{soa}},
		{"nope.discoverd.", dns.TypeA, dns.RcodeNameError, nil, []string{soa}},
		{"leader.nope.discoverd.", dns.TypeA, dns.RcodeNameError, nil, []string{soa}},
		{"gone.web._i.discoverd.", dns.TypeA, dns.RcodeNameError, nil, []string{soa}},
		{"i1.nope._i.discoverd.", dns.TypeA, dns.RcodeNameError, nil, []string{soa}},
		{"a.b.web.discoverd.", dns.TypeA, dns.RcodeNameError, nil, []string{soa}},
		{"_web.discoverd.", dns.TypeSRV, dns.RcodeNameError, nil, []string{soa}},
		{"web_x.discoverd.", dns.TypeA, dns.RcodeNameError, nil, []string{soa}},
	}
	for _, network := range []string{"udp", "tcp"} {
		for _, c := range cases {
			t.Run(network+" "+c.name+" "+dns.TypeToString[c.qtype], func(t *testing.T) {
				r := query(t, s.addr, network, c.name, c.qtype, 0)
				if r.Rcode != c.rcode || !r.Authoritative || r.Truncated {
					t.Fatalf("rcode %s aa %v tc %v, want %s aa", dns.RcodeToString[r.Rcode], r.Authoritative, r.Truncated, dns.RcodeToString[c.rcode])
				}
				want := slices.Clone(c.answer)
				sort.Strings(want)
				if got := render(r.Answer); !slices.Equal(got, want) {
					t.Errorf("answer %q, want %q", got, want)
				}
				if got := render(r.Ns); !slices.Equal(got, c.ns) {
					t.Errorf("authority %q, want %q", got, c.ns)
				}
				for _, rr := range r.Answer {
					if rr.Header().Ttl != 7 {
						t.Errorf("TTL of %s is %d, want --dns-ttl 7", rr, rr.Header().Ttl)
					}
					if !strings.EqualFold(rr.Header().Name, c.name) {
						t.Errorf("record %s is not owned by the name asked", rr)
					}
				}
			})
		}
	}

	// Over TCP an SRV answer carries its targets' addresses.
	r := query(t, s.addr, "tcp", "web.discoverd.", dns.TypeSRV, 0)
	var extra []string
	for _, rr := range r.Extra {
		if _, ok := rr.(*dns.OPT); !ok {
			extra = append(extra, rr.Header().Name+" "+render([]dns.RR{rr})[0])
		}
	}
	sort.Strings(extra)
	want := []string{"i1.web._i.discoverd. A 10.0.0.1", "i1b.web._i.discoverd. A 10.0.0.1", "i2.web._i.discoverd. A 10.0.0.2", "v6.web._i.discoverd. AAAA fd00::1"}
	if !slices.Equal(extra, want) {
		t.Errorf("additional of SRV over TCP %q, want %q", extra, want)
	}
	r = query(t, s.addr, "tcp", "leader.web.discoverd.", dns.TypeSRV, 0)
	if got := render(r.Extra); !slices.Equal(got, []string{"A 10.0.0.1"}) || r.Extra[0].Header().Name != "leader.web.discoverd." {
		t.Errorf("additional of the leader's SRV over TCP %v", r.Extra)
	}

	// Counted in the node's metrics.
	queries := counter(t, s.n.Metrics(), "discoverd_dns_queries_total", "transport", "udp") +
		counter(t, s.n.Metrics(), "discoverd_dns_queries_total", "transport", "tcp")
	if queries < float64(2*len(cases)) {
		t.Errorf("discoverd_dns_queries_total = %v after %d queries", queries, 2*len(cases))
	}
	if nx := counter(t, s.n.Metrics(), "discoverd_dns_responses_total", "rcode", "NXDOMAIN"); nx < 14 {
		t.Errorf(`discoverd_dns_responses_total{rcode="NXDOMAIN"} = %v, want at least 14`, nx)
	}
	if n := counter(t, s.n.Metrics(), "discoverd_dns_answer_records_total", "", ""); n == 0 {
		t.Error("discoverd_dns_answer_records_total is 0")
	}
}

// counter reads a counter of g, the one with label=value when label is set.
func counter(t *testing.T, g prometheus.Gatherer, name, label, value string) float64 {
	t.Helper()
	fams, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			if label == "" || hasLabel(m, label, value) {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

func hasLabel(m *dto.Metric, name, value string) bool {
	for _, l := range m.GetLabel() {
		if l.GetName() == name && l.GetValue() == value {
			return true
		}
	}
	return false
}

// TestDNSTruncation checks that a UDP answer fills the client's buffer (512
// bytes, or its EDNS0 size) and sets TC when it had to cut, and that TCP
// answers hold every record.
func TestDNSTruncation(t *testing.T) {
	s := startDNS(t, time.Minute, dnsapi.Options{})
	s.addService("big")
	for i := 0; i < 200; i++ {
		s.register("big", "i"+strconv.Itoa(i), "10.1."+strconv.Itoa(i/250)+"."+strconv.Itoa(i%250)+":80", "http")
	}
	check := func(network string, qtype uint16, edns uint16, wantTC bool, wantAnswers, maxSize int) *dns.Msg {
		t.Helper()
		r := query(t, s.addr, network, "big.discoverd.", qtype, edns)
		if r.Truncated != wantTC {
			t.Errorf("%s %s edns %d: TC %v, want %v", network, dns.TypeToString[qtype], edns, r.Truncated, wantTC)
		}
		if wantAnswers > 0 && len(r.Answer) != wantAnswers {
			t.Errorf("%s %s edns %d: %d answers, want %d", network, dns.TypeToString[qtype], edns, len(r.Answer), wantAnswers)
		}
		if wantAnswers == 0 && (len(r.Answer) == 0 || len(r.Answer) >= 200) {
			t.Errorf("%s %s edns %d: %d answers, want a part of 200", network, dns.TypeToString[qtype], edns, len(r.Answer))
		}
		r.Compress = true // as it came over the wire
		if size := r.Len(); size > maxSize {
			t.Errorf("%s %s edns %d: answer of %d bytes, more than %d", network, dns.TypeToString[qtype], edns, size, maxSize)
		}
		return r
	}
	plain := check("udp", dns.TypeA, 0, true, 0, 512)
	// Filled: one more record would not have fit.
	if size := plain.Len(); size < 512-32 {
		t.Errorf("a truncated 512-byte answer holds only %d bytes", size)
	}
	big := check("udp", dns.TypeA, 1232, true, 0, 1232)
	if len(big.Answer) <= len(plain.Answer) {
		t.Errorf("an EDNS0 buffer of 1232 holds %d A records, no more than 512 bytes' %d", len(big.Answer), len(plain.Answer))
	}
	if big.IsEdns0() == nil {
		t.Error("no OPT record in the answer to an EDNS0 query")
	}
	check("udp", dns.TypeA, 4096, false, 200, 4096)
	check("udp", dns.TypeSRV, 4096, true, 0, 4096)
	r := check("tcp", dns.TypeSRV, 0, false, 200, dns.MaxMsgSize)
	if len(r.Extra) != 200 {
		t.Errorf("SRV over TCP: %d additional records, want 200", len(r.Extra))
	}
	check("tcp", dns.TypeA, 0, false, 200, dns.MaxMsgSize)

	// Shuffled: two truncated answers (almost surely) differ.
	differ := false
	for i := 0; i < 5 && !differ; i++ {
		again := query(t, s.addr, "udp", "big.discoverd.", dns.TypeA, 0)
		differ = !slices.Equal(rawAnswers(again), rawAnswers(plain))
	}
	if !differ {
		t.Error("six truncated answers held the same records in the same order: not shuffled")
	}
	if n := counter(t, s.n.Metrics(), "discoverd_dns_truncated_total", "", ""); n < 3 {
		t.Errorf("discoverd_dns_truncated_total = %v, want at least 3", n)
	}
}

func rawAnswers(m *dns.Msg) []string {
	out := make([]string, len(m.Answer))
	for i, rr := range m.Answer {
		out[i] = rr.String()
	}
	return out
}

// TestDNSLeaderFollowsExpiry: when the leader stops heartbeating and
// expires, leader.{service} answers the next oldest instance.
func TestDNSLeaderFollowsExpiry(t *testing.T) {
	const ttl = 2 * time.Second
	s := startDNS(t, ttl, dnsapi.Options{})
	s.addService("db")
	s.register("db", "a", "10.0.0.1:5432", "tcp")
	b := s.register("db", "b", "10.0.0.2:5432", "tcp")
	if got := render(query(t, s.addr, "udp", "leader.db.discoverd.", dns.TypeA, 0).Answer); !slices.Equal(got, []string{"A 10.0.0.1"}) {
		t.Fatalf("leader before expiry %q", got)
	}
	// Keep b alive; a expires.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(ttl / 4)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				inst := *b
				s.n.Heartbeat(context.Background(), "db", &inst)
			}
		}
	}()
	defer func() { close(stop); wg.Wait() }()
	deadline := time.Now().Add(15 * time.Second)
	for {
		r := query(t, s.addr, "udp", "leader.db.discoverd.", dns.TypeSRV, 0)
		if got := render(r.Answer); slices.Equal(got, []string{"SRV 1 1 5432 leader.db.discoverd."}) {
			if a := render(query(t, s.addr, "udp", "leader.db.discoverd.", dns.TypeA, 0).Answer); slices.Equal(a, []string{"A 10.0.0.2"}) {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("leader.db still answers %q 15s after a stopped heartbeating", render(r.Answer))
		}
		time.Sleep(50 * time.Millisecond)
	}
	if got := render(query(t, s.addr, "udp", "db.discoverd.", dns.TypeA, 0).Answer); !slices.Equal(got, []string{"A 10.0.0.2"}) {
		t.Fatalf("db after a expired %q", got)
	}
}

// upstream is a plain miekg/dns server answering example.org. A 192.0.2.7
// and NXDOMAIN for everything else.
func upstream(t *testing.T) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		m.RecursionAvailable = true
		if r.Question[0].Name == "example.org." && r.Question[0].Qtype == dns.TypeA {
			rr, _ := dns.NewRR("example.org. 60 IN A 192.0.2.7")
			m.Answer = append(m.Answer, rr)
		} else {
			m.Rcode = dns.RcodeNameError
		}
		w.WriteMsg(m)
	})}
	started := make(chan struct{})
	srv.NotifyStartedFunc = func() { close(started) }
	go srv.ActivateAndServe()
	<-started
	t.Cleanup(func() { srv.Shutdown() })
	return pc.LocalAddr().String()
}

// TestDNSRecursors: names outside the zone go to --dns-recursors (the first
// that answers), and are REFUSED without any.
func TestDNSRecursors(t *testing.T) {
	up := upstream(t)
	dead := func() string { // a port with nothing listening
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer pc.Close()
		return pc.LocalAddr().String()
	}()
	s := startDNS(t, time.Minute, dnsapi.Options{Recursors: []string{dead, up}, RecursorTimeout: time.Second})
	r := query(t, s.addr, "udp", "example.org.", dns.TypeA, 0)
	if r.Rcode != dns.RcodeSuccess || !slices.Equal(render(r.Answer), []string{"A 192.0.2.7"}) || !r.RecursionAvailable {
		t.Fatalf("recursed answer %v", r)
	}
	if r := query(t, s.addr, "udp", "nothing.example.org.", dns.TypeA, 0); r.Rcode != dns.RcodeNameError {
		t.Fatalf("recursed NXDOMAIN came back as %s", dns.RcodeToString[r.Rcode])
	}
	// The zone is still answered locally.
	if r := query(t, s.addr, "udp", "nope.discoverd.", dns.TypeA, 0); r.Rcode != dns.RcodeNameError || !r.Authoritative {
		t.Fatalf("zone name with recursors: %v", r)
	}
	if n := counter(t, s.n.Metrics(), "discoverd_dns_recursed_total", "", ""); n != 2 {
		t.Errorf("discoverd_dns_recursed_total = %v, want 2", n)
	}

	norec := startDNS(t, time.Minute, dnsapi.Options{})
	for _, name := range []string{"example.org.", "xdiscoverd.", "."} {
		if r := query(t, norec.addr, "udp", name, dns.TypeA, 0); r.Rcode != dns.RcodeRefused {
			t.Errorf("%s without recursors: %s, want REFUSED", name, dns.RcodeToString[r.Rcode])
		}
	}
}

// TestDNSDomain serves another zone.
func TestDNSDomain(t *testing.T) {
	s := startDNS(t, time.Minute, dnsapi.Options{Domain: "sd.example."})
	s.addService("web")
	s.register("web", "i1", "10.0.0.1:80", "http")
	if got := render(query(t, s.addr, "udp", "web.sd.example.", dns.TypeA, 0).Answer); !slices.Equal(got, []string{"A 10.0.0.1"}) {
		t.Fatalf("web.sd.example. A = %q", got)
	}
	if r := query(t, s.addr, "udp", "web.discoverd.", dns.TypeA, 0); r.Rcode != dns.RcodeRefused {
		t.Fatalf("web.discoverd. outside --dns-domain sd.example.: %s", dns.RcodeToString[r.Rcode])
	}
	r := query(t, s.addr, "udp", "web.sd.example.", dns.TypeSRV, 0)
	if got := render(r.Answer); !slices.Equal(got, []string{"SRV 1 1 80 i1.web._i.sd.example."}) {
		t.Fatalf("SRV in sd.example. = %q", got)
	}
}

// TestDNSProxy: a proxy node answers from a voter's state, in an open
// cluster and in one with mutual TLS and tokens, where its reads present
// the node's certificate.
func TestDNSProxy(t *testing.T) {
	t.Run("open", func(t *testing.T) {
		c := integration.NewCluster(t, 1, 1)
		testDNSProxy(t, c, dnsapi.PeerAuth{})
	})
	t.Run("mutual TLS and auth", func(t *testing.T) {
		sec := integration.NewSecurity(t)
		c := integration.NewCluster(t, 1, 1, integration.WithSecurity(sec))
		testDNSProxy(t, c, dnsapi.PeerAuth{TLS: sec.TLS.ClientConfig(nil)})
	})
}

func testDNSProxy(t *testing.T, c *integration.Cluster, peer dnsapi.PeerAuth) {
	voter, proxy := c.Nodes[0], c.Proxies()[0]
	vn, pn := voter.Node(), proxy.Node()
	h := dnsapi.NewHandler(dnsapi.ByRole(pn.IsProxy, pn, dnsapi.ThroughVoters(pn.Voters, peer)), dnsapi.Options{})
	addr := listen(t, h)
	ctx := context.Background()
	if _, err := vn.AddService(ctx, "web", api.ServiceConfig{}); err != nil {
		t.Fatal(err)
	}
	for i, a := range []string{"10.0.0.1:80", "10.0.0.2:80"} {
		inst := &api.Instance{Addr: a, Proto: "http"}
		api.PrepareInstance(inst, "p"+strconv.Itoa(i))
		if _, err := vn.Heartbeat(ctx, "web", inst); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []struct {
		name  string
		qtype uint16
		rcode int
		want  []string
	}{
		{"web.discoverd.", dns.TypeA, dns.RcodeSuccess, []string{"A 10.0.0.1", "A 10.0.0.2"}},
		{"web.discoverd.", dns.TypeSRV, dns.RcodeSuccess, []string{"SRV 1 1 80 p0.web._i.discoverd.", "SRV 1 1 80 p1.web._i.discoverd."}},
		{"leader.web.discoverd.", dns.TypeA, dns.RcodeSuccess, []string{"A 10.0.0.1"}},
		{"p1.web._i.discoverd.", dns.TypeA, dns.RcodeSuccess, []string{"A 10.0.0.2"}},
		{"nope.discoverd.", dns.TypeA, dns.RcodeNameError, nil},
		{"leader.nope.discoverd.", dns.TypeA, dns.RcodeNameError, nil},
	} {
		r := query(t, addr, "udp", c.name, c.qtype, 0)
		if r.Rcode != c.rcode || !slices.Equal(render(r.Answer), c.want) {
			t.Errorf("proxy %s %s: %s %q, want %s %q", c.name, dns.TypeToString[c.qtype], dns.RcodeToString[r.Rcode], render(r.Answer), dns.RcodeToString[c.rcode], c.want)
		}
	}
	if _, err := vn.AddService(ctx, "empty", api.ServiceConfig{}); err != nil {
		t.Fatal(err)
	}
	if r := query(t, addr, "udp", "leader.empty.discoverd.", dns.TypeA, 0); r.Rcode != dns.RcodeSuccess || len(r.Answer) != 0 {
		t.Errorf("proxy leader of a service with no instances: %v", r)
	}
}
