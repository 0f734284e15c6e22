package node

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	dto "github.com/prometheus/client_model/go"

	"github.com/discoverd/discoverd/internal/version"
)

// gather reads the node's registry and returns discoverd's own families.
func gather(t *testing.T, n *Node) map[string]*dto.MetricFamily {
	t.Helper()
	fams, err := n.Metrics().Gather()
	if err != nil {
		t.Fatalf("gathering metrics: %v", err)
	}
	out := make(map[string]*dto.MetricFamily)
	for _, f := range fams {
		if strings.HasPrefix(f.GetName(), "discoverd_") {
			out[f.GetName()] = f
		}
	}
	return out
}

// sample is the value of an unlabelled gauge or counter.
func sample(t *testing.T, fams map[string]*dto.MetricFamily, name string) float64 {
	t.Helper()
	f, ok := fams[name]
	if !ok || len(f.Metric) != 1 {
		t.Fatalf("%s: not one sample in %v", name, f)
	}
	if c := f.Metric[0].GetCounter(); c != nil {
		return c.GetValue()
	}
	return f.Metric[0].GetGauge().GetValue()
}

// TestMetricsFollowPrometheusConventions lints discoverd's metrics as
// promtool would: help texts, units, _total on counters and only there.
func TestMetricsFollowPrometheusConventions(t *testing.T) {
	n := startNode(t, t.TempDir(), "127.0.0.1:0")
	fams := gather(t, n)
	var list []*dto.MetricFamily
	for _, f := range fams {
		list = append(list, f)
	}
	problems, err := promlint.NewWithMetricFamilies(list).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("%s: %s", p.Metric, p.Text)
	}
	// A voter without NATS reports every metric but the NATS ones.
	if bi := fams["discoverd_build_info"]; bi == nil || len(bi.Metric) != 1 || bi.Metric[0].GetGauge().GetValue() != 1 {
		t.Errorf("discoverd_build_info = %v, want one gauge of 1", bi)
	} else if labels := bi.Metric[0].GetLabel(); len(labels) != 2 || labels[1].GetName() != "version" || labels[1].GetValue() != version.Get() {
		t.Errorf("discoverd_build_info labels %v, want version=%q", labels, version.Get())
	}
	if got := n.Status().Version; got != version.Get() {
		t.Errorf("status version %q, want %q", got, version.Get())
	}
	for _, name := range []string{
		"discoverd_build_info", "discoverd_raft_commands_applied_total", "discoverd_cluster_max_command_type", "discoverd_voter", "discoverd_raft_leader", "discoverd_raft_voters",
		"discoverd_raft_term", "discoverd_raft_commit_index", "discoverd_raft_applied_index", "discoverd_raft_commit_nudges_total",
		"discoverd_services", "discoverd_instances",
		"discoverd_heartbeat_table_entries", "discoverd_heartbeat_feed_connected",
		"discoverd_expired_instances_total",
		"discoverd_event_streams", "discoverd_event_streams_closed_slow_total",
		"discoverd_conns_refused_no_fd_total", "discoverd_event_fanout_seconds",
	} {
		if _, ok := fams[name]; !ok {
			t.Errorf("%s is missing", name)
		}
		delete(fams, name)
	}
	for name := range fams {
		t.Errorf("%s is reported by a voter without NATS", name)
	}
}
