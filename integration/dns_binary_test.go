package integration

import (
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/discoverd/discoverd/api"
)

// TestBinaryDNSFlags runs the built daemon with --dns-addr, --dns-domain
// and --dns-ttl: it answers its services over DNS and counts the queries
// in /metrics; bad DNS flags stop it at start with a message.
func TestBinaryDNSFlags(t *testing.T) {
	ports := FreePorts(t, 2)
	addr := "127.0.0.1:" + strconv.Itoa(ports[0])
	dnsAddr := "127.0.0.1:" + strconv.Itoa(ports[1])
	d := runDaemon(t, t.TempDir(), addr, "--nats-addr", "off", "--instance-ttl", "30s",
		"--dns-addr", dnsAddr, "--dns-domain", "sd.test", "--dns-ttl", "9")
	mustDo(t, "PUT", d.url()+"/services/web", api.ServiceConfig{})
	if code, b := register(t, d.url(), "web", "w1", "10.0.0.1:80"); code != 200 {
		t.Fatalf("register: %d %s", code, b)
	}
	m := new(dns.Msg)
	m.SetQuestion("leader.web.sd.test.", dns.TypeA)
	var r *dns.Msg
	WaitFor(t, 10*time.Second, "a DNS answer", func() bool {
		var err error
		r, _, err = (&dns.Client{Timeout: time.Second}).Exchange(m, dnsAddr)
		return err == nil
	})
	if len(r.Answer) != 1 || r.Answer[0].(*dns.A).A.String() != "10.0.0.1" || r.Answer[0].Header().Ttl != 9 {
		t.Fatalf("leader.web.sd.test. A = %v", r)
	}
	r, _, err := (&dns.Client{Net: "tcp", Timeout: 5 * time.Second}).Exchange(m, dnsAddr)
	if err != nil || len(r.Answer) != 1 {
		t.Fatalf("over TCP: %v, %v", r, err)
	}
	_, body := do(t, "GET", d.url()+"/metrics", nil)
	for _, want := range []string{`discoverd_dns_queries_total{transport="udp"}`, `discoverd_dns_queries_total{transport="tcp"} 1`} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}

	for _, c := range []struct{ flag, value, msg string }{
		{"--dns-addr", "nope", "--dns-addr"},
		{"--dns-recursors", "8.8.8.8", "not host:port"},
		{"--dns-domain", "bad..name", "--dns-domain"},
		{"--dns-ttl", "-1", "dns-ttl"},
	} {
		out, err := exec.Command(discoverdBinary(t), "--data-dir", t.TempDir(), "--addr", "127.0.0.1:0", "--nats-addr", "off",
			c.flag, c.value).CombinedOutput()
		if err == nil || !strings.Contains(string(out), c.msg) {
			t.Errorf("%s %s: %v, output %q; want a failure naming %s", c.flag, c.value, err, out, c.msg)
		}
	}
}
