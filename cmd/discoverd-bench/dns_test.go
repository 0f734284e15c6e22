package main

import (
	"os"
	"strings"
	"testing"

	"github.com/discoverd/discoverd/dnsapi"
	"github.com/discoverd/discoverd/internal/testnode"
)

// TestMain lets the test binary serve the dns workload's baseline, as the
// command does when it runs itself again.
func TestMain(m *testing.M) {
	serveBaselineIfAsked()
	serveServerBaselineIfAsked()
	os.Exit(m.Run())
}

// TestDNSWorkload runs the dns workload against a node's DNS server: six
// rows (discoverd and the baseline, for A, SRV and leader), each with
// queries and no errors.
func TestDNSWorkload(t *testing.T) {
	ts := testnode.Start(t, testnode.Options{TTL: testTTL})
	h := dnsapi.NewHandler(ts.Node(), dnsapi.Options{})
	srv, err := dnsapi.Listen("127.0.0.1:0", h)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	s := &testServer{http: ts.URL(), ttl: testTTL}
	results := runJSON(t, s.smallArgs("--json", "--dns", srv.Addr(), "--duration", "500ms", "dns"))
	want := []string{"dns-a", "dns-srv", "dns-leader", "dns-a-baseline", "dns-srv-baseline", "dns-leader-baseline"}
	if len(results) != len(want) {
		t.Fatalf("%d rows, want %v: %+v", len(results), want, results)
	}
	for i, r := range results {
		t.Logf("%s", r.short())
		if r.Workload != want[i] || r.Error != "" || r.Errors != 0 || r.Ops == 0 || r.Rate == nil || *r.Rate <= 0 {
			t.Errorf("row %d: %+v, want %s with queries and no errors", i, r, want[i])
		}
		if strings.HasPrefix(r.Workload, "dns-a") && !strings.Contains(r.Note, " 100 answers") {
			t.Errorf("%s: %s, want all 100 A records answered", r.Workload, r.Note)
		}
	}
}
