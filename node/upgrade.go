package node

import (
	"fmt"
	"slices"
	"sync/atomic"

	"github.com/discoverd/discoverd/api"
	"github.com/discoverd/discoverd/fsm"
	"github.com/discoverd/discoverd/internal/version"
	"github.com/hashicorp/raft"
)

// Safe rolling upgrades. Every node announces, in the replicated node
// table, the newest command type it applies. The leader writes a command
// type only once every voter of the configuration announces it, and
// otherwise its older form (fsm.ForMaxType); followers pick the same form
// when they encode, so that an older leader is never handed a type it does
// not know. A node that still meets a type it does not know (a downgrade,
// or a voter added and written to before it announced) stops applying and
// exits with an error, rather than skip the entry and diverge.

// claimMaxCommandTypeEnv makes a built binary claim an older maximum
// command type (Config.MaxCommandType): the upgrade tests run it as the
// previous release.
const claimMaxCommandTypeEnv = "DISCOVERD_CLAIM_MAX_COMMAND_TYPE"

// clusterCommandMax is the newest command type every voter applies, as
// last computed from the node table.
func (n *Node) clusterCommandMax() fsm.CommandType { return fsm.CommandType(n.commandMax.Load()) }

// updateCommandMax recomputes clusterCommandMax from the voters and their
// announcements. A voter that announced nothing yet counts as the oldest
// release.
func (n *Node) updateCommandMax(voters []string, nodes []api.NodeInfo) {
	m := n.cfg.MaxCommandType
	for _, addr := range voters {
		t := fsm.BaselineCommandType
		if i := slices.IndexFunc(nodes, func(ni api.NodeInfo) bool { return ni.Addr == addr }); i >= 0 && nodes[i].MaxCommandType != 0 {
			t = fsm.CommandType(nodes[i].MaxCommandType)
		}
		m = min(m, t)
	}
	if old := fsm.CommandType(n.commandMax.Swap(uint32(m))); old != m {
		n.log.Info().Uint8("cluster_max_command_type", uint8(m)).Uint8("previous", uint8(old)).
			Msg("the newest command type every voter applies changed")
	}
}

// encodeRegistration is the log entry registering inst: the compact form
// once every voter applies it, the JSON one before.
func (n *Node) encodeRegistration(service string, inst *api.Instance) []byte {
	if n.clusterCommandMax() >= fsm.CmdAddInstanceCompact {
		return fsm.EncodeAddInstance(service, inst)
	}
	return fsm.MustEncode(fsm.CmdAddInstance, &fsm.AddInstance{Service: service, Instance: *inst})
}

// Fatal yields the error that stopped the node from within: it met a Raft
// entry of a command type it does not know. The node has closed itself by
// then; the process should exit with the error.
func (n *Node) Fatal() <-chan error { return n.fatal }

// stopFatally reports err on Fatal and closes the node, once.
func (n *Node) stopFatally(err error) {
	n.fatalOnce.Do(func() {
		n.log.Error().Err(err).Msg("stopping")
		n.fatal <- err
		go n.Close()
	})
}

// unknownCommand is the error of a node meeting a type it does not apply.
func (n *Node) unknownCommand(t fsm.CommandType, index uint64) error {
	return fmt.Errorf("discoverd %s cannot apply the raft entry at index %d: command type %d is newer than any it knows (up to %d); "+
		"it stopped rather than skip it; run a release that knows command type %d on this node",
		version.Get(), index, t, n.cfg.MaxCommandType, t)
}

// commandCounts counts the entries applied by command type, for metrics.
type commandCounts [256]atomic.Uint64

// checkEntry is run by the state machine for every entry before it is
// applied. An entry of a command type this node does not know stops it:
// the node applies nothing more (the entry and anything after stay in the
// log, to be applied by a newer release).
func (r *raftFSM) checkEntry(l *raft.Log) bool {
	if r.stopped.Load() {
		return false
	}
	if l.Type != raft.LogCommand || len(l.Data) == 0 {
		return true
	}
	t := fsm.CommandType(l.Data[0])
	if t <= r.maxType {
		r.counts[t].Add(1)
		return true
	}
	r.stopped.Store(true)
	r.onUnknown(t, l.Index)
	return false
}
