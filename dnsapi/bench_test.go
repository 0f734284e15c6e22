package dnsapi_test

import (
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/discoverd/discoverd/dnsapi"
	"github.com/discoverd/discoverd/internal/testnode"
)

// BenchmarkServeDNS measures the handler alone (no sockets) answering the
// names of a 100-instance service, to watch its allocations:
//
//	go test -run XXX -bench ServeDNS -benchmem ./dnsapi/
func BenchmarkServeDNS(b *testing.B) {
	ts := testnode.Start(b, testnode.Options{TTL: time.Hour})
	n := ts.Node()
	if _, err := n.AddService(b.Context(), "web", apiServiceConfig()); err != nil {
		b.Fatal(err)
	}
	for i := 0; i < 100; i++ {
		registerNode(b, n, "web", "i"+strconv.Itoa(i), "10.0."+strconv.Itoa(i/250)+"."+strconv.Itoa(i%250)+":80")
	}
	h := dnsapi.NewHandler(n, dnsapi.Options{})
	for _, c := range []struct {
		name  string
		qtype uint16
	}{{"web.discoverd.", dns.TypeA}, {"web.discoverd.", dns.TypeSRV}, {"leader.web.discoverd.", dns.TypeA}, {"nope.discoverd.", dns.TypeA}} {
		b.Run(c.name+dns.TypeToString[c.qtype], func(b *testing.B) {
			req := new(dns.Msg)
			req.SetQuestion(c.name, c.qtype)
			req.SetEdns0(4096, false)
			w := &fakeWriter{local: &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 53}}
			b.ReportAllocs()
			for b.Loop() {
				h.ServeDNS(w, req)
			}
		})
	}
}
