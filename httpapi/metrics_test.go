package httpapi_test

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/discoverd/discoverd/api"
)

// scrape reads /metrics as Prometheus would and parses the text exposition.
func (s *testServer) scrape() (response, map[string]*dto.MetricFamily) {
	s.t.Helper()
	r := s.must("GET", "/metrics", "")
	if f := expfmt.ResponseFormat(r.header); f.FormatType() != expfmt.TypeTextPlain {
		s.t.Fatalf("GET /metrics: Content-Type %q is not the Prometheus text format", r.header.Get("Content-Type"))
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(r.body))
	if err != nil {
		s.t.Fatalf("GET /metrics: parsing the exposition: %v\n%s", err, r.body)
	}
	return r, fams
}

// metricValue is the value of the single, unlabelled sample of a gauge or
// counter, and whether the family is there at all.
func metricValue(fams map[string]*dto.MetricFamily, name string) (float64, bool, error) {
	f, ok := fams[name]
	if !ok {
		return 0, false, nil
	}
	if f.GetHelp() == "" {
		return 0, true, fmt.Errorf("%s has no help text", name)
	}
	if len(f.Metric) != 1 {
		return 0, true, fmt.Errorf("%s has %d samples, want 1", name, len(f.Metric))
	}
	m := f.Metric[0]
	switch f.GetType() {
	case dto.MetricType_GAUGE:
		return m.GetGauge().GetValue(), true, nil
	case dto.MetricType_COUNTER:
		return m.GetCounter().GetValue(), true, nil
	}
	return 0, true, fmt.Errorf("%s is a %s, want a gauge or counter", name, f.GetType())
}

// checkMetrics compares the named samples with want.
func checkMetrics(fams map[string]*dto.MetricFamily, want map[string]float64) error {
	var bad []string
	for name, w := range want {
		got, ok, err := metricValue(fams, name)
		switch {
		case err != nil:
			bad = append(bad, err.Error())
		case !ok:
			bad = append(bad, name+" is missing")
		case got != w:
			bad = append(bad, fmt.Sprintf("%s = %v, want %v", name, got, w))
		}
	}
	if len(bad) > 0 {
		return fmt.Errorf("%s", strings.Join(bad, "; "))
	}
	return nil
}

func TestMetricsReportTheRegistry(t *testing.T) {
	s := newServer(t)
	s.must("PUT", "/services/web", "")
	s.must("PUT", "/services/db", `{"leader_type": "manual"}`)
	s.register("web", "w1", "10.0.0.1:80", nil)
	s.register("web", "w2", "10.0.0.2:80", nil)
	s.register("web", "w3", "10.0.0.3:80", nil)
	s.register("db", "d1", "10.0.1.1:5432", nil)
	// Heartbeats of known instances change nothing but the heartbeat table.
	s.register("web", "w1", "10.0.0.1:80", nil)
	s.register("db", "d1", "10.0.1.1:5432", nil)
	s.must("DELETE", "/services/web/instances/w2", "")
	sse := s.stream("/services/web", nil)
	sse.next(5 * time.Second)

	// warmup (made by newServer), web and db; w1, w3 and d1.
	want := map[string]float64{
		"discoverd_voter":                    1,
		"discoverd_raft_leader":              1,
		"discoverd_raft_voters":              1,
		"discoverd_services":                 3,
		"discoverd_instances":                3,
		"discoverd_heartbeat_table_entries":  3,
		"discoverd_heartbeat_feed_connected": 0,
		"discoverd_event_streams":            1,
		"discoverd_expired_instances_total":  0,
	}
	// The node may apply an entry of its own (its announcement) at any
	// moment: compare the applied index with the node's, read on both sides
	// of the scrape, until nothing was applied in between.
	s.eventually(5*time.Second, func() error {
		before := s.n.AppliedIndex()
		r, fams := s.scrape()
		after := s.n.AppliedIndex()
		if err := checkMetrics(fams, want); err != nil {
			return err
		}
		if before != after {
			return fmt.Errorf("the applied index moved during the scrape")
		}
		applied, _, err := metricValue(fams, "discoverd_raft_applied_index")
		if err != nil {
			return err
		}
		if uint64(applied) != after || r.index != after {
			return fmt.Errorf("discoverd_raft_applied_index = %v, Discoverd-Index %d, node's applied index %d", applied, r.index, after)
		}
		commit, _, _ := metricValue(fams, "discoverd_raft_commit_index")
		if commit < applied {
			return fmt.Errorf("discoverd_raft_commit_index %v is behind the applied index %v", commit, applied)
		}
		if term, _, _ := metricValue(fams, "discoverd_raft_term"); term < 1 {
			return fmt.Errorf("discoverd_raft_term = %v", term)
		}
		return nil
	})

	_, fams := s.scrape()
	for _, name := range []string{"go_goroutines", "process_start_time_seconds"} {
		if _, ok := fams[name]; !ok {
			t.Errorf("%s is missing: the Go runtime and process collectors are not registered", name)
		}
	}
	// This node runs without NATS: its NATS metrics are left out, not
	// reported as zeros.
	for name := range fams {
		if strings.HasPrefix(name, "discoverd_nats_") {
			t.Errorf("%s is reported by a node without NATS", name)
		}
	}

	sse.close()
	s.eventually(5*time.Second, func() error {
		_, fams := s.scrape()
		return checkMetrics(fams, map[string]float64{"discoverd_event_streams": 0})
	})

	s.wantError(s.do("POST", "/metrics", "", nil), 405, api.CodeValidation)
}

func TestMetricsCountExpiredInstances(t *testing.T) {
	s := newServerTTL(t, testTTL)
	s.must("PUT", "/services/web", "")
	s.register("web", "w1", "10.0.0.1:80", nil)
	s.register("web", "w2", "10.0.0.2:80", nil)
	s.eventually(5*time.Second, func() error {
		_, fams := s.scrape()
		return checkMetrics(fams, map[string]float64{
			"discoverd_expired_instances_total": 2,
			"discoverd_instances":               0,
			"discoverd_heartbeat_table_entries": 0,
		})
	})
}
