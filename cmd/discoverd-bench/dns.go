package main

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// dnsInstances is the size of the service the dns workload queries.
const dnsInstances = 100

// dnsBufSize is the EDNS0 buffer the dns workload's queries announce, so
// that the A answer of the whole service fits one UDP packet.
const dnsBufSize = 4096

// dnsQuery is one of the dns workload's queries.
type dnsQuery struct {
	row   string
	name  func(svc string) string
	qtype uint16
}

var dnsQueries = []dnsQuery{
	{"dns-a", func(svc string) string { return svc + "." }, dns.TypeA},
	{"dns-srv", func(svc string) string { return svc + "." }, dns.TypeSRV},
	{"dns-leader", func(svc string) string { return "leader." + svc + "." }, dns.TypeA},
}

// runDNS: queries per second over UDP, --concurrency sockets, for the A and
// SRV records of a service of 100 instances and for its leader's name, then
// the same queries against a plain miekg/dns server in a process of its own
// (this program, run again) that answers from a fixed set of the same
// records: the ceiling of this machine and this client.
func runDNS(ctx context.Context, b *bench) []Result {
	const name = "dns"
	if b.cfg.dnsAddr == "" {
		return []Result{{Workload: name, Skipped: "no --dns address given"}}
	}
	svc, cleanup, err := b.createService(ctx, name)
	if err != nil {
		return failed(name, err)
	}
	defer cleanup()
	if _, err := b.fill(ctx, svc, "d-", dnsInstances); err != nil {
		return failed(name, err)
	}
	// Keep the instances alive for the whole run.
	hbCtx, stopHB := context.WithCancel(ctx)
	var hbDone sync.WaitGroup
	hbDone.Add(1)
	go func() {
		defer hbDone.Done()
		tick := time.NewTicker(b.cfg.ttl / 3)
		defer tick.Stop()
		for {
			select {
			case <-hbCtx.Done():
				return
			case <-tick.C:
				b.load(hbCtx, "heartbeating", min(8, b.cfg.concurrency), 0, dnsInstances, b.registerOp(svc, "d-"))
			}
		}
	}()
	defer func() { stopHB(); hbDone.Wait() }()

	zone := dns.Fqdn(b.cfg.dnsDomain)
	fqdn := svc + "." + zone[:len(zone)-1]
	// The service is answered in full before anything is timed.
	if err := awaitDNS(ctx, b.cfg.dnsAddr, fqdn+".", dnsInstances); err != nil {
		return failed(name, err)
	}
	base, stopBase, err := spawnBaseline(svc, zone)
	if err != nil {
		return failed(name, err)
	}
	defer stopBase()

	var rows []Result
	for _, target := range []struct{ suffix, addr string }{{"", b.cfg.dnsAddr}, {"-baseline", base}} {
		for _, q := range dnsQueries {
			qname := q.name(fqdn)
			var answers int
			var mu sync.Mutex
			res := b.load(ctx, q.row+target.suffix, b.cfg.concurrency, b.cfg.duration, 0, func(w int) (func(int64) error, func()) {
				op, n, done := dnsOp(target.addr, qname, q.qtype)
				return func(seq int64) error {
					err := op(seq)
					mu.Lock()
					answers = max(answers, *n)
					mu.Unlock()
					return err
				}, done
			})
			row := loadRow(q.row+target.suffix, res)
			if row.Note == "" {
				who := "discoverd"
				if target.suffix != "" {
					who = "plain miekg/dns server, fixed records"
				}
				row.Note = fmt.Sprintf("%s %s, %d answers, UDP, concurrency %d, %s", qname, dns.TypeToString[q.qtype], answers, b.cfg.concurrency, who)
			}
			rows = append(rows, row)
		}
	}
	return rows
}

// dnsOp is one worker's query loop over its own UDP socket: it sends the
// packed query with a fresh id, reads the answer and checks its id, rcode
// and that it answered something. n is the answer count last seen.
func dnsOp(addr, qname string, qtype uint16) (op func(int64) error, n *int, done func()) {
	answers := new(int)
	conn, err := net.Dial("udp", addr)
	if err != nil {
		return func(int64) error { return err }, answers, nil
	}
	m := new(dns.Msg)
	m.SetQuestion(qname, qtype)
	m.SetEdns0(dnsBufSize, false)
	pkt, err := m.Pack()
	if err != nil {
		conn.Close()
		return func(int64) error { return err }, answers, nil
	}
	buf := make([]byte, 65535)
	return func(seq int64) error {
		id := uint16(seq)
		binary.BigEndian.PutUint16(pkt, id)
		conn.SetDeadline(time.Now().Add(2 * time.Second))
		if _, err := conn.Write(pkt); err != nil {
			return err
		}
		for {
			k, err := conn.Read(buf)
			if err != nil {
				return err
			}
			if k < 12 || binary.BigEndian.Uint16(buf) != id {
				continue // a late answer to an earlier query that timed out
			}
			if rcode := buf[3] & 0xf; rcode != dns.RcodeSuccess {
				return fmt.Errorf("%s %s: rcode %s", qname, dns.TypeToString[qtype], dns.RcodeToString[int(rcode)])
			}
			*answers = int(binary.BigEndian.Uint16(buf[6:]))
			if *answers == 0 {
				return fmt.Errorf("%s %s: no answer", qname, dns.TypeToString[qtype])
			}
			return nil
		}
	}, answers, func() { conn.Close() }
}

// awaitDNS waits until the server answers name with want A records.
func awaitDNS(ctx context.Context, addr, name string, want int) error {
	c := &dns.Client{Timeout: 2 * time.Second, UDPSize: dnsBufSize}
	m := new(dns.Msg)
	m.SetQuestion(name, dns.TypeA)
	m.SetEdns0(dnsBufSize, false)
	deadline := time.Now().Add(30 * time.Second)
	got := 0
	for time.Now().Before(deadline) {
		r, _, err := c.ExchangeContext(ctx, m, addr)
		if err == nil && r.Rcode == dns.RcodeSuccess {
			if got = len(r.Answer); got >= want {
				return nil
			}
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		time.Sleep(100 * time.Millisecond)
	}
	return errors.New("the DNS server at " + addr + " answered " + strconv.Itoa(got) + " A records of " + name + " after 30s, not " + strconv.Itoa(want))
}

// startBaseline starts a plain miekg/dns server on loopback that answers the
// dns workload's names from fixed records: svc's 100 A and SRV records
// (as discoverd would answer them) and one A record for its leader.
func startBaseline(svc, zone string) (string, func(), error) {
	fqdn := svc + "." + zone[:len(zone)-1]
	var as, srvs []dns.RR
	for i := 0; i < dnsInstances; i++ {
		ip := net.IPv4(10, 0, byte(i>>8), byte(i)).To4()
		as = append(as, &dns.A{Hdr: dns.RR_Header{Name: fqdn + ".", Rrtype: dns.TypeA, Class: dns.ClassINET}, A: ip})
		srvs = append(srvs, &dns.SRV{Hdr: dns.RR_Header{Name: fqdn + ".", Rrtype: dns.TypeSRV, Class: dns.ClassINET},
			Priority: 1, Weight: 1, Port: uint16(1024 + i), Target: "d-" + strconv.Itoa(i) + "." + svc + "._i." + zone})
	}
	leader := []dns.RR{&dns.A{Hdr: dns.RR_Header{Name: "leader." + fqdn + ".", Rrtype: dns.TypeA, Class: dns.ClassINET}, A: net.IPv4(10, 0, 0, 0).To4()}}
	records := map[string]map[uint16][]dns.RR{
		fqdn + ".":             {dns.TypeA: as, dns.TypeSRV: srvs},
		"leader." + fqdn + ".": {dns.TypeA: leader},
	}
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		m.Authoritative = true
		if len(r.Question) == 1 {
			m.Answer = records[r.Question[0].Name][r.Question[0].Qtype]
		}
		size := dns.MinMsgSize
		if opt := r.IsEdns0(); opt != nil {
			size = int(opt.UDPSize())
			m.SetEdns0(opt.UDPSize(), false)
		}
		m.Truncate(size)
		w.WriteMsg(m)
	})}
	started := make(chan struct{})
	srv.NotifyStartedFunc = func() { close(started) }
	go srv.ActivateAndServe()
	<-started
	return pc.LocalAddr().String(), func() { srv.Shutdown() }, nil
}

// baselineEnv, when set to "SERVICE ZONE", makes this program serve the
// baseline's records instead of benchmarking: it prints the server's
// address on stdout and serves until its stdin closes.
const baselineEnv = "DISCOVERD_BENCH_DNS_BASELINE"

// serveBaselineIfAsked is the baseline process's main; it reports false
// when this process is not one.
func serveBaselineIfAsked() bool {
	v := os.Getenv(baselineEnv)
	if v == "" {
		return false
	}
	svc, zone, _ := strings.Cut(v, " ")
	addr, stop, err := startBaseline(svc, zone)
	serveAsChild("baseline DNS server", addr, stop, err)
	return true
}

// spawnBaseline runs the baseline server in a child process, so that it
// competes with the load loops for the CPU as a server process does, and
// not inside them.
func spawnBaseline(svc, zone string) (string, func(), error) {
	c, err := spawnChild(baselineEnv + "=" + svc + " " + zone)
	if err != nil {
		return "", nil, err
	}
	return c.addr, c.stop, nil
}
