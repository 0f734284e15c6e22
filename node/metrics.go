package node

import (
	"runtime"

	"github.com/discoverd/discoverd/fsm"
	"github.com/discoverd/discoverd/internal/version"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// The node's metrics are read at scrape time from state the node keeps
// anyway (Raft's indexes, the state machine's sizes, the counters of the
// NATS server and the heartbeat subscriber), so that heartbeats, applies
// and the event fan-out pay nothing for them. A metric that only a voter
// has (Raft, the registry, the heartbeat table) is left out on a proxy
// rather than reported as 0.
var (
	descBuildInfo = prometheus.NewDesc("discoverd_build_info",
		"Always 1; the labels say which build of discoverd this node runs.", []string{"version", "go_version"}, nil)
	descCommandsApplied = prometheus.NewDesc("discoverd_raft_commands_applied_total",
		"Raft entries this voter's registry applied, by command type, since it last became a voter.", []string{"command"}, nil)
	descClusterCommandMax = prometheus.NewDesc("discoverd_cluster_max_command_type",
		"The newest Raft command type every voter applies, as this node last read the node table; the leader writes nothing newer.", nil, nil)
	descVoter = prometheus.NewDesc("discoverd_voter",
		"1 if this node is a Raft voter, 0 if it is a proxy.", nil, nil)
	descRaftLeader = prometheus.NewDesc("discoverd_raft_leader",
		"1 if this node is the Raft leader, else 0.", nil, nil)
	descRaftVoters = prometheus.NewDesc("discoverd_raft_voters",
		"Voters in the Raft configuration as this node knows it; on a proxy, the voters it forwards to.", nil, nil)
	descRaftTerm = prometheus.NewDesc("discoverd_raft_term",
		"Current Raft term of this voter.", nil, nil)
	descRaftCommit = prometheus.NewDesc("discoverd_raft_commit_index",
		"Index of the last Raft entry this voter knows to be committed.", nil, nil)
	descRaftApplied = prometheus.NewDesc("discoverd_raft_applied_index",
		"Revision of the last change applied to this voter's registry (the Discoverd-Index it answers with): the index of its Raft entry, or past it once registrations were written in batches.", nil, nil)
	descCommitNudges = prometheus.NewDesc("discoverd_raft_commit_nudges_total",
		"Raft barriers this voter issued as leader to tell followers the commit index of entries it had just applied, since it last became a voter; none while nothing is written.", nil, nil)
	descServices = prometheus.NewDesc("discoverd_services",
		"Services in this voter's registry.", nil, nil)
	descInstances = prometheus.NewDesc("discoverd_instances",
		"Instances registered in this voter's registry, over all services.", nil, nil)
	descHeartbeatEntries = prometheus.NewDesc("discoverd_heartbeat_table_entries",
		"Instances in this voter's heartbeat table (the times it last heard from each).", nil, nil)
	descHeartbeatFeed = prometheus.NewDesc("discoverd_heartbeat_feed_connected",
		"1 while this voter's NATS server has routes to every other voter, so that it hears every heartbeat; always 0 on a single voter, which needs no feed.", nil, nil)
	descExpired = prometheus.NewDesc("discoverd_expired_instances_total",
		"Instances this node removed for missing their heartbeat TTL, while it was Raft leader.", nil, nil)
	descStreams = prometheus.NewDesc("discoverd_event_streams",
		"Open event subscriptions (SSE streams) served from this node's registry.", nil, nil)
	descStreamsSlow = prometheus.NewDesc("discoverd_event_streams_closed_slow_total",
		"Event subscriptions this node closed because their reader fell too far behind.", nil, nil)
	descFanout = prometheus.NewDesc("discoverd_event_fanout_seconds",
		"How long the last fan-out of applied events took, from publishing them to this node's streams to the last write of them into a stream's socket (SSE transports that report their writes).", nil, nil)
	descAcceptRefused = prometheus.NewDesc("discoverd_conns_refused_no_fd_total",
		"Connections to the HTTP/Raft port closed unserved because the process was out of file descriptors.", nil, nil)
	descNATSRoutes = prometheus.NewDesc("discoverd_nats_routed_servers",
		"Other NATS servers (voters) the embedded NATS server has routes to.", nil, nil)
	descNATSLeafnodes = prometheus.NewDesc("discoverd_nats_leafnodes",
		"Leafnode connections of the embedded NATS server: on a voter, the proxies connected to it; on a proxy, its connections to voters.", nil, nil)
	descNATSSlow = prometheus.NewDesc("discoverd_nats_slow_consumers_total",
		"Times the embedded NATS server found a connection too slow to take what it was sent, by kind of connection.", []string{"kind"}, nil)
	descNATSRefused = prometheus.NewDesc("discoverd_nats_limit_refusals_total",
		"Clients the embedded NATS server refused for its limits, by limit: conns (past --nats-max-conns), payload (a message over --nats-max-payload, such as an oversized heartbeat; its connection is closed), subs (past --nats-max-subs; nats-server reports these at most every 2 s, so a lower bound).", []string{"limit"}, nil)
	descNATSHeartbeats = prometheus.NewDesc("discoverd_nats_heartbeats_received_total",
		"Heartbeat messages this voter took from NATS, malformed ones included, since it last became a voter.", nil, nil)
	descNATSMalformed = prometheus.NewDesc("discoverd_nats_heartbeats_malformed_total",
		"NATS heartbeat messages this voter dropped for a bad subject or an invalid instance, since it last became a voter.", nil, nil)
	descNATSFailed = prometheus.NewDesc("discoverd_nats_heartbeats_failed_total",
		"Well-formed NATS heartbeats this voter refused (no leader, unknown service, ...), since it last became a voter.", nil, nil)
	descNATSDropped = prometheus.NewDesc("discoverd_nats_heartbeats_dropped_total",
		"NATS heartbeat messages dropped before this voter could take them, its subscriptions' pending limits being full, since it last became a voter.", nil, nil)
)

var metricDescs = []*prometheus.Desc{
	descBuildInfo, descCommandsApplied, descClusterCommandMax, descVoter, descRaftLeader, descRaftVoters, descRaftTerm, descRaftCommit, descRaftApplied, descCommitNudges,
	descServices, descInstances, descHeartbeatEntries, descHeartbeatFeed, descExpired,
	descStreams, descStreamsSlow, descFanout, descAcceptRefused,
	descNATSRoutes, descNATSLeafnodes, descNATSSlow, descNATSRefused,
	descNATSHeartbeats, descNATSMalformed, descNATSFailed, descNATSDropped,
}

// newMetrics returns the node's own registry: several nodes can run in one
// process (the tests do), and each must report its own state, so nothing
// goes to the global default registry.
func newMetrics(n *Node) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		nodeCollector{n},
	)
	return reg
}

// Metrics is the node's Prometheus registry: the Go runtime, the process
// and discoverd's own metrics (discoverd_*), gathered when it is read.
func (n *Node) Metrics() prometheus.Gatherer { return n.metrics }

// RegisterMetrics adds the collectors of the node's transports (the HTTP
// connection limiter, the DNS server) to the node's registry, so that /metrics
// reports them with the node's own.
func (n *Node) RegisterMetrics(cs ...prometheus.Collector) error {
	for _, c := range cs {
		if err := n.metrics.Register(c); err != nil {
			return err
		}
	}
	return nil
}

type nodeCollector struct{ n *Node }

func (c nodeCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range metricDescs {
		ch <- d
	}
}

func (c nodeCollector) Collect(ch chan<- prometheus.Metric) {
	n := c.n
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	// One load of the voter, so that a promote or demote during the scrape
	// cannot mix a proxy's answers with a voter's.
	v := n.v.Load()
	gauge(descBuildInfo, 1, version.Get(), runtime.Version())
	gauge(descVoter, flag(v != nil))
	gauge(descRaftLeader, flag(v != nil && v.isLeader()))
	gauge(descRaftVoters, float64(len(n.clusterVoters())))
	counter(descExpired, n.expired.Load())
	gauge(descStreams, float64(n.hub.open.Load()))
	counter(descStreamsSlow, n.hub.closedSlow.Load())
	gauge(descFanout, n.hub.fanoutTime().Seconds())
	counter(descAcceptRefused, n.mux.acc.refused.Load())
	if v != nil {
		gauge(descRaftTerm, float64(v.raft.CurrentTerm()))
		gauge(descRaftCommit, float64(v.raft.CommitIndex()))
		gauge(descRaftApplied, float64(v.fsm.AppliedIndex()))
		counter(descCommitNudges, v.nudge.issued.Load())
		services, instances := v.fsm.Size()
		gauge(descServices, float64(services))
		gauge(descInstances, float64(instances))
		gauge(descHeartbeatEntries, float64(n.heartbeats.len()))
		gauge(descHeartbeatFeed, flag(n.feedSince.Load() != 0))
		gauge(descClusterCommandMax, float64(n.clusterCommandMax()))
		for t := fsm.CmdAddService; t <= fsm.MaxCommandType; t++ {
			counter(descCommandsApplied, v.raftFSM.counts[t].Load(), t.String())
		}
	}
	if n.nats == nil {
		return
	}
	gauge(descNATSRoutes, float64(n.nats.NumRemotes()))
	gauge(descNATSLeafnodes, float64(n.nats.NumLeafNodes()))
	clients, routes, leafnodes := n.nats.SlowConsumers()
	counter(descNATSSlow, clients, "client")
	counter(descNATSSlow, routes, "route")
	counter(descNATSSlow, leafnodes, "leafnode")
	conns, payload, subs := n.nats.LimitRefusals()
	counter(descNATSRefused, conns, "conns")
	counter(descNATSRefused, payload, "payload")
	counter(descNATSRefused, subs, "subs")
	n.hbSubMu.Lock()
	hs := n.hbSub
	n.hbSubMu.Unlock()
	if hs != nil {
		counter(descNATSHeartbeats, hs.Received())
		counter(descNATSMalformed, hs.Malformed())
		counter(descNATSFailed, hs.Failed())
		counter(descNATSDropped, hs.Dropped())
	}
}

func flag(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
