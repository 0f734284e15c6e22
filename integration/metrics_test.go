package integration

import (
	"fmt"
	"net/http"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/discoverd/discoverd/api"
)

// scrapeMetrics reads a node's /metrics as Prometheus would.
func scrapeMetrics(base string) (map[string]*dto.MetricFamily, error) {
	resp, err := httpc.Get(base + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s/metrics: %s", base, resp.Status)
	}
	if f := expfmt.ResponseFormat(resp.Header); f.FormatType() != expfmt.TypeTextPlain {
		return nil, fmt.Errorf("GET %s/metrics: Content-Type %q", base, resp.Header.Get("Content-Type"))
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	return p.TextToMetricFamilies(resp.Body)
}

// metric is the value of an unlabelled gauge or counter; ok is false when
// the family is absent.
func metric(fams map[string]*dto.MetricFamily, name string) (v float64, ok bool) {
	f, ok := fams[name]
	if !ok || len(f.Metric) != 1 {
		return 0, false
	}
	if c := f.Metric[0].GetCounter(); c != nil {
		return c.GetValue(), true
	}
	return f.Metric[0].GetGauge().GetValue(), true
}

// waitMetrics scrapes base until check accepts what it reads.
func waitMetrics(t *testing.T, base, what string, check func(map[string]*dto.MetricFamily) error) {
	t.Helper()
	var last error
	deadline := time.Now().Add(10 * time.Second)
	for {
		fams, err := scrapeMetrics(base)
		if err == nil {
			err = check(fams)
		}
		if err == nil {
			return
		}
		last = err
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, last)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// want checks the values of unlabelled metrics.
func want(fams map[string]*dto.MetricFamily, values map[string]float64) error {
	for name, w := range values {
		got, ok := metric(fams, name)
		if !ok {
			return fmt.Errorf("%s is missing", name)
		}
		if got != w {
			return fmt.Errorf("%s = %v, want %v", name, got, w)
		}
	}
	return nil
}

// TestMetricsProxyAnswersForItself checks that a proxy, which forwards
// every other request to a voter, answers /metrics with its own metrics,
// and that heartbeats sent through its NATS leafnode show on the voter's.
func TestMetricsProxyAnswersForItself(t *testing.T) {
	c := NewCluster(t, 1, 1)
	voter, proxy := c.Nodes[0], c.Nodes[1]
	mustDo(t, "PUT", proxy.URL()+"/services/edge", api.ServiceConfig{})
	nc := natsConnect(t, proxy.NATSURL)
	WaitFor(t, 5*time.Second, "a heartbeat answered through the proxy's NATS leafnode", func() bool {
		msg, err := nc.Request("discoverd.heartbeat.edge", heartbeatJSON("e1", "10.0.0.1:80"), 500*time.Millisecond)
		return err == nil && string(msg.Data) == `{"ok":true}`
	})

	waitMetrics(t, proxy.URL(), "the proxy's metrics", func(fams map[string]*dto.MetricFamily) error {
		if err := want(fams, map[string]float64{
			"discoverd_voter":          0,
			"discoverd_raft_leader":    0,
			"discoverd_raft_voters":    1,
			"discoverd_nats_leafnodes": 1,
			"discoverd_event_streams":  0,
		}); err != nil {
			return err
		}
		// A proxy keeps no Raft state: it reports none, rather than zeros.
		for _, name := range []string{"discoverd_raft_applied_index", "discoverd_raft_term", "discoverd_instances", "discoverd_nats_heartbeats_received_total"} {
			if _, ok := fams[name]; ok {
				return fmt.Errorf("the proxy reports %s", name)
			}
		}
		return nil
	})
	waitMetrics(t, voter.URL(), "the voter's metrics", func(fams map[string]*dto.MetricFamily) error {
		if err := want(fams, map[string]float64{
			"discoverd_voter":          1,
			"discoverd_raft_leader":    1,
			"discoverd_raft_voters":    1,
			"discoverd_services":       1,
			"discoverd_instances":      1,
			"discoverd_nats_leafnodes": 1,
		}); err != nil {
			return err
		}
		if got, _ := metric(fams, "discoverd_nats_heartbeats_received_total"); got < 1 {
			return fmt.Errorf("discoverd_nats_heartbeats_received_total = %v after a heartbeat over NATS", got)
		}
		if _, ok := fams["discoverd_nats_slow_consumers_total"]; !ok {
			return fmt.Errorf("discoverd_nats_slow_consumers_total is missing")
		}
		return nil
	})

	// With its only voter gone, the proxy still answers for itself.
	c.Kill(0)
	waitMetrics(t, proxy.URL(), "the proxy's metrics without a voter", func(fams map[string]*dto.MetricFamily) error {
		return want(fams, map[string]float64{"discoverd_voter": 0, "discoverd_nats_leafnodes": 0})
	})
}
