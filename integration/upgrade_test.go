package integration

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/discoverd/discoverd/api"
	"github.com/discoverd/discoverd/fsm"
	"github.com/discoverd/discoverd/internal/version"
	"github.com/discoverd/discoverd/node"
)

// appliedOf is how many entries of a command type a node applied.
func appliedOf(t *testing.T, n *node.Node, cmd fsm.CommandType) uint64 {
	t.Helper()
	fams, err := n.Metrics().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() != "discoverd_raft_commands_applied_total" {
			continue
		}
		for _, m := range f.Metric {
			if labelOf(m, "command") == cmd.String() {
				return uint64(m.GetCounter().GetValue())
			}
		}
	}
	return 0
}

// clusterMaxOf is the newest command type a node last found every voter
// to apply.
func clusterMaxOf(t *testing.T, n *node.Node) fsm.CommandType {
	t.Helper()
	fams, err := n.Metrics().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() == "discoverd_cluster_max_command_type" {
			return fsm.CommandType(f.Metric[0].GetGauge().GetValue())
		}
	}
	return 0
}

func labelOf(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

// waitAnnounced waits until every voter's node table holds each voter's
// announced maximum command type as want says, and every voter has taken
// the lowest of them as the cluster's.
func waitAnnounced(t *testing.T, c *Cluster, want map[int]fsm.CommandType) {
	t.Helper()
	WaitFor(t, 20*time.Second, fmt.Sprintf("the node table to announce %v", want), func() bool {
		for _, nd := range c.Nodes {
			n := nd.Node()
			if n == nil {
				continue
			}
			nodes, err := n.Nodes()
			if err != nil {
				return false
			}
			lowest := fsm.MaxCommandType
			for _, typ := range want {
				lowest = min(lowest, typ)
			}
			if clusterMaxOf(t, n) != lowest {
				return false
			}
			for i, typ := range want {
				found := false
				for _, ni := range nodes {
					if ni.Addr == c.Nodes[i].Addr {
						found = ni.MaxCommandType == uint8(typ) && ni.Version == version.Get()
					}
				}
				if !found {
					return false
				}
			}
		}
		return true
	})
}

// registerEverywhere registers count instances of svc through each running
// node in turn and returns their ids.
func registerEverywhere(t *testing.T, c *Cluster, svc, prefix string, count int) []string {
	t.Helper()
	var ids []string
	for i := 0; i < count; i++ {
		nd := c.Nodes[i%len(c.Nodes)]
		if !nd.Running() {
			continue
		}
		id := fmt.Sprintf("%s%d", prefix, i)
		mustDo(t, "PUT", nd.URL()+"/services/"+svc+"/instances/"+id, api.Instance{Addr: fmt.Sprintf("10.0.0.%d:80", i%250+1), Proto: "http"})
		ids = append(ids, id)
	}
	return ids
}

func holdsAll(n *node.Node, svc string, ids []string) bool {
	insts, err := n.FSM().Instances(svc)
	if err != nil {
		return false
	}
	have := map[string]bool{}
	for _, in := range insts {
		have[in.ID] = true
	}
	for _, id := range ids {
		if !have[id] {
			return false
		}
	}
	return true
}

// TestMixedVersionCluster runs two voters that claim the command types of
// the previous release and one of this one: registrations are written in
// the older form and every voter applies them; once all claim the newer
// types, the compact form is used; and a voter that then meets a type it
// does not know (it is taken back to the older release) stops with an
// error naming its version and the type, while the cluster goes on.
func TestMixedVersionCluster(t *testing.T) {
	old := fsm.BaselineCommandType
	c := NewCluster(t, 3, 0, WithTTL(time.Minute, 100*time.Millisecond), WithNodeConfig(func(i int, cfg *node.Config) {
		if i < 2 {
			cfg.MaxCommandType = old
		}
	}))
	waitAnnounced(t, c, map[int]fsm.CommandType{0: old, 1: old, 2: fsm.MaxCommandType})
	mustDo(t, "PUT", c.Nodes[0].URL()+"/services/web", api.ServiceConfig{})

	// Mixed: the older form, applied by every voter.
	ids := registerEverywhere(t, c, "web", "mixed-", 30)
	for _, nd := range c.Nodes {
		WaitFor(t, 10*time.Second, fmt.Sprintf("voter %d to apply the mixed registrations", nd.Index), func() bool {
			return holdsAll(nd.Node(), "web", ids)
		})
		if got := appliedOf(t, nd.Node(), fsm.CmdAddInstanceCompact); got != 0 {
			t.Errorf("voter %d applied %d compact registrations while two voters do not know the type", nd.Index, got)
		}
		if got := appliedOf(t, nd.Node(), fsm.CmdAddInstance); got < uint64(len(ids)) {
			t.Errorf("voter %d applied %d registrations of the older form, want at least %d", nd.Index, got, len(ids))
		}
	}

	// Upgraded: every voter claims the newer types, one at a time.
	for i := 0; i < 2; i++ {
		c.Nodes[i].cfg.MaxCommandType = 0
		c.Restart(i)
		c.WaitForLeader(20 * time.Second)
	}
	waitAnnounced(t, c, map[int]fsm.CommandType{0: fsm.MaxCommandType, 1: fsm.MaxCommandType, 2: fsm.MaxCommandType})
	for _, nd := range c.Nodes {
		WaitFor(t, 10*time.Second, fmt.Sprintf("voter %d to see every voter apply the newer types", nd.Index), func() bool {
			return holdsAll(nd.Node(), "web", ids)
		})
	}
	compactBefore := appliedOf(t, c.Nodes[2].Node(), fsm.CmdAddInstanceCompact)
	newIDs := registerEverywhere(t, c, "web", "new-", 30)
	for _, nd := range c.Nodes {
		WaitFor(t, 10*time.Second, fmt.Sprintf("voter %d to apply the compact registrations", nd.Index), func() bool {
			return holdsAll(nd.Node(), "web", newIDs)
		})
	}
	if got := appliedOf(t, c.Nodes[2].Node(), fsm.CmdAddInstanceCompact) - compactBefore; got < uint64(len(newIDs)) {
		t.Errorf("%d compact registrations applied once every voter knows the type, want %d", got, len(newIDs))
	}

	// Taken back to the older release, voter 0 meets the compact entries in
	// its own log: it stops with the error rather than skip them.
	c.Nodes[0].cfg.MaxCommandType = old
	c.Restart(0)
	stopped := c.Nodes[0].Node()
	select {
	case err := <-stopped.Fatal():
		msg := err.Error()
		for _, want := range []string{"discoverd " + version.Get(), fmt.Sprintf("command type %d", fsm.CmdAddInstanceCompact)} {
			if !strings.Contains(msg, want) {
				t.Errorf("the stopped node's error %q does not say %q", msg, want)
			}
		}
	case <-time.After(30 * time.Second):
		t.Fatal("a voter claiming the older types applied compact entries without stopping")
	}
	WaitFor(t, 10*time.Second, "the stopped voter to close itself", func() bool { return stopped.IsProxy() })
	// The other two keep serving reads and writes.
	WaitFor(t, 20*time.Second, "the two voters left to take a write", func() bool {
		code, _ := register(t, c.Nodes[1].URL(), "web", "after-stop", "10.0.9.1:80")
		return code == http.StatusOK
	})
	for _, i := range []int{1, 2} {
		WaitFor(t, 10*time.Second, fmt.Sprintf("voter %d to apply the write after the stop", i), func() bool {
			return holdsAll(c.Nodes[i].Node(), "web", append(newIDs, "after-stop"))
		})
	}
}
