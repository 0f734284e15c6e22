package node

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"time"

	"github.com/discoverd/discoverd/api"
	"github.com/discoverd/discoverd/fsm"
	"github.com/hashicorp/raft"
)

// Internal routes the nodes use among themselves, beside the public API.
const (
	// NodesPath lists every node's announcement (GET → []api.NodeInfo).
	NodesPath = "/raft/nodes"
	// PeersPath lists the voters (GET → []string) and, with an address
	// appended, adds or removes one (PUT, DELETE).
	PeersPath = "/raft/peers"
	// LeaderPath names the Raft leader (GET → api.LeaderInfo).
	LeaderPath = "/raft/leader"
)

// upkeepInterval is how often a node reconciles its cluster view: its own
// announcement, its NATS routes or leafnode remotes, and a proxy's voters.
const upkeepInterval = 250 * time.Millisecond

// RaftLeader is the Raft leader's advertised address, "" when none is known.
func (n *Node) RaftLeader() string {
	if v := n.v.Load(); v != nil {
		addr, _ := v.raft.LeaderWithID()
		return string(addr)
	}
	n.votersMu.Lock()
	defer n.votersMu.Unlock()
	return n.proxyLeader
}

// clusterVoters lists the voters of the current Raft configuration (a
// proxy: the voters it knows).
func (n *Node) clusterVoters() []string {
	v := n.v.Load()
	if v == nil {
		return n.Voters()
	}
	f := v.raft.GetConfiguration()
	if f.Error() != nil {
		return nil
	}
	var out []string
	for _, s := range f.Configuration().Servers {
		if s.Suffrage == raft.Voter {
			out = append(out, string(s.Address))
		}
	}
	slices.Sort(out)
	return out
}

// RaftPeers lists the voters' advertised addresses.
func (n *Node) RaftPeers() []string { return n.clusterVoters() }

// Voters is a proxy's list of voters to forward to, the leader first when
// known.
func (n *Node) Voters() []string {
	n.votersMu.Lock()
	defer n.votersMu.Unlock()
	out := slices.Clone(n.voters)
	if n.proxyLeader != "" {
		if i := slices.Index(out, n.proxyLeader); i > 0 {
			out[0], out[i] = out[i], out[0]
		}
	}
	return out
}

func (n *Node) setVoters(voters []string) {
	voters = slices.Clone(voters)
	slices.Sort(voters)
	n.votersMu.Lock()
	n.voters = voters
	n.votersMu.Unlock()
}

// AddPeer makes addr a voter. On a follower it is forwarded to the leader.
func (n *Node) AddPeer(ctx context.Context, addr string) error {
	return n.changePeer(ctx, http.MethodPut, addr, func(v *voter, timeout time.Duration) raft.Future {
		return v.raft.AddVoter(raft.ServerID(addr), raft.ServerAddress(addr), 0, timeout)
	})
}

// RemovePeer removes the voter addr. On a follower it is forwarded to the
// leader.
func (n *Node) RemovePeer(ctx context.Context, addr string) error {
	return n.changePeer(ctx, http.MethodDelete, addr, func(v *voter, timeout time.Duration) raft.Future {
		return v.raft.RemoveServer(raft.ServerID(addr), 0, timeout)
	})
}

func (n *Node) changePeer(ctx context.Context, method, addr string, change func(*voter, time.Duration) raft.Future) error {
	if err := api.ValidateAddr(addr); err != nil {
		return api.Errorf(api.CodeValidation, "peer address %q is not host:port", addr)
	}
	v, err := n.voter()
	if err != nil {
		return err
	}
	leader, isLeader := n.awaitLeader(ctx, v)
	if isLeader {
		timeout := defaultApplyTimeout
		if dl, ok := ctx.Deadline(); ok {
			timeout = time.Until(dl)
		}
		if err := change(v, timeout).Error(); err != nil {
			return raftError(err)
		}
		return nil
	}
	if leader == "" {
		return n.noLeaderError()
	}
	return n.fwd.do(ctx, method, leader, PeersPath+"/"+url.PathEscape(addr), nil, nil)
}

// Promote turns this proxy into a voter: it starts Raft with an empty log,
// asks the leader to add it, and serves the registry itself once it has
// caught up. Promoting into a one-voter cluster works: this node's Raft is
// running before the leader adds it, so the two-voter configuration commits.
func (n *Node) Promote(ctx context.Context) error {
	n.roleMu.Lock()
	defer n.roleMu.Unlock()
	if n.v.Load() != nil {
		return api.Errorf(api.CodeValidation, "this node is already a voter")
	}
	voters := n.Voters()
	if len(voters) == 0 {
		return api.Errorf(api.CodeUnavailable, "this proxy knows no voter to ask")
	}
	if err := n.wipeRaftState(); err != nil {
		return fmt.Errorf("clearing old raft state: %w", err)
	}
	v, err := n.startVoter(false)
	if err != nil {
		return err
	}
	fail := func(err error) error {
		v.stop()
		n.wipeRaftState()
		return err
	}
	var lastErr error
	added := false
	for _, voter := range voters {
		if lastErr = n.fwd.do(ctx, http.MethodPut, voter, PeersPath+"/"+url.PathEscape(n.advertise), nil, nil); lastErr == nil {
			added = true
			break
		}
	}
	if !added {
		return fail(lastErr)
	}
	// Serve nothing from the new state machine until it holds what the
	// leader had acknowledged when it added this node.
	leader := n.RaftLeader()
	for _, addr := range append([]string{leader}, voters...) {
		if addr == "" {
			continue
		}
		res, err := n.fwd.forward(ctx, addr, nil)
		if err != nil {
			continue
		}
		if v.waitApplied(ctx, res.Index) {
			v.ready.Store(true)
			v.setInStep()
			n.v.Store(v)
			n.subscribeHeartbeats(v)
			n.log.Info().Uint64("index", res.Index).Msg("promoted to voter")
			return nil
		}
	}
	return fail(api.Errorf(api.CodeUnavailable, "added as a voter but could not catch up with the leader; demote and retry"))
}

// Demote turns this voter into a proxy: the leader removes it from the Raft
// configuration, then its Raft state is stopped and wiped. The last voter
// cannot be demoted.
func (n *Node) Demote(ctx context.Context) error {
	n.roleMu.Lock()
	defer n.roleMu.Unlock()
	v := n.v.Load()
	if v == nil {
		return api.Errorf(api.CodeValidation, "this node is already a proxy")
	}
	voters := n.clusterVoters()
	others := slices.DeleteFunc(slices.Clone(voters), func(a string) bool { return a == n.advertise })
	if len(others) == 0 {
		return api.Errorf(api.CodeValidation, "this node is the only voter; promote another node before demoting it")
	}
	if err := n.RemovePeer(ctx, n.advertise); err != nil {
		return err
	}
	n.v.Store(nil)
	n.unsubscribeHeartbeats()
	// Streams were fed by this node's state machine; their readers must
	// reconnect and will be served through a voter.
	n.hub.closeAll(api.Errorf(api.CodeUnavailable, "event stream closed: this node was demoted to a proxy; reconnect"))
	err := v.stop()
	if werr := n.wipeRaftState(); err == nil {
		err = werr
	}
	n.setVoters(others)
	n.log.Info().Strs("voters", others).Msg("demoted to proxy")
	return err
}

// runClusterUpkeep keeps the node's view of the cluster current.
func (n *Node) runClusterUpkeep() {
	defer n.wg.Done()
	t := time.NewTicker(upkeepInterval)
	defer t.Stop()
	for {
		select {
		case <-n.closing:
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		if v := n.v.Load(); v != nil {
			n.voterUpkeep(ctx, v)
		} else {
			n.proxyUpkeep(ctx)
		}
		cancel()
	}
}

// voterUpkeep announces this node's NATS addresses in the replicated state,
// points its NATS routes at the other voters, and tracks whether its
// heartbeat feed covers every voter.
func (n *Node) voterUpkeep(ctx context.Context, v *voter) {
	if v.raft.State() != raft.Leader && v.raft.State() != raft.Follower {
		return
	}
	if leader, _ := v.raft.LeaderWithID(); leader == "" {
		return
	}
	nodes := v.fsm.Nodes()
	me := n.Info()
	if i := slices.IndexFunc(nodes, func(ni api.NodeInfo) bool { return ni.Addr == me.Addr }); i < 0 || nodes[i] != me {
		if _, err := n.apply(ctx, fsm.CmdSetNode, &fsm.SetNode{Node: me}); err != nil {
			n.log.Debug().Err(err).Msg("announcing this node")
		}
	}
	voters := n.clusterVoters()
	n.updateCommandMax(voters, nodes)
	n.multiVoter.Store(len(voters) > 1)
	n.setVoters(voters)
	if n.nats == nil {
		n.feedSince.Store(0)
		return
	}
	var routes, leafs []string
	for _, ni := range nodes {
		if ni.Addr == n.advertise || !slices.Contains(voters, ni.Addr) {
			continue
		}
		if ni.NATSCluster != "" {
			routes = append(routes, ni.NATSCluster)
		}
		if ni.NATSLeaf != "" {
			leafs = append(leafs, ni.NATSLeaf)
		}
	}
	slices.Sort(routes)
	connected := false
	if me.NATSCluster != "" {
		if err := n.nats.SetRoutes(routes); err != nil {
			n.log.Warn().Err(err).Msg("setting nats routes")
		}
		connected = n.nats.NumRemotes() >= len(routes)
	} else {
		// A voter without a route port (a promoted proxy) hears the cluster
		// through a leafnode, as it did as a proxy.
		if err := n.nats.SetLeafRemotes(leafs); err != nil {
			n.log.Warn().Err(err).Msg("setting nats leafnode remotes")
		}
		connected = len(leafs) == 0 || n.nats.NumLeafNodes() > 0
	}
	// A link that just came up may have missed events while it was down:
	// the leader republishes every service's leader so that subscribers
	// behind it converge, as it does when it takes over.
	links := n.nats.NumRemotes() + n.nats.NumLeafNodes()
	if links > n.natsLinks && v.isLeader() && v.ready.Load() {
		n.republishLeaders(v)
	}
	n.natsLinks = links
	if connected && len(voters) > 1 {
		if n.feedSince.Load() == 0 {
			n.feedSince.Store(time.Now().UnixNano())
		}
	} else {
		n.feedSince.Store(0)
	}
}

// proxyUpkeep learns the voters, the leader and the voters' leafnode ports
// from any voter that answers.
func (n *Node) proxyUpkeep(ctx context.Context) {
	for _, addr := range n.Voters() {
		var peers []string
		if err := n.fwd.getJSON(ctx, addr, PeersPath, &peers); err != nil || len(peers) == 0 {
			continue
		}
		var leader api.LeaderInfo
		n.fwd.getJSON(ctx, addr, LeaderPath, &leader)
		n.setVoters(peers)
		n.votersMu.Lock()
		n.proxyLeader = leader.Host
		n.votersMu.Unlock()
		if n.nats != nil {
			var nodes []api.NodeInfo
			if err := n.fwd.getJSON(ctx, addr, NodesPath, &nodes); err == nil {
				var leafs []string
				for _, ni := range nodes {
					if ni.NATSLeaf != "" && slices.Contains(peers, ni.Addr) {
						leafs = append(leafs, ni.NATSLeaf)
					}
				}
				if err := n.nats.SetLeafRemotes(leafs); err != nil {
					n.log.Warn().Err(err).Msg("setting nats leafnode remotes")
				}
			}
		}
		return
	}
	n.votersMu.Lock()
	n.proxyLeader = ""
	n.votersMu.Unlock()
}

// Nodes lists every node's announcement from the replicated state.
func (n *Node) Nodes() ([]api.NodeInfo, error) {
	v, err := n.voter()
	if err != nil {
		return nil, err
	}
	return v.fsm.Nodes(), nil
}

// do sends a request to a node, with body as JSON when there is one, decodes
// a 2xx answer into out, and turns any other answer into its api.Error.
func (f *forwarder) do(ctx context.Context, method, addr, path string, body []byte, out any) error {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://"+addr+path, rd)
	if err != nil {
		return api.Errorf(api.CodeUnavailable, "%s %s: %v", method, addr, err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set(api.ForwardedHeader, "1")
	resp, err := f.client.Do(req)
	if err != nil {
		return api.Errorf(api.CodeUnavailable, "%s %s%s: %v", method, addr, path, err)
	}
	defer resp.Body.Close()
	answer, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return api.Errorf(api.CodeUnavailable, "reading the answer of %s: %v", addr, err)
	}
	if resp.StatusCode/100 != 2 {
		var e api.Error
		if json.Unmarshal(answer, &e) != nil || e.Code == "" {
			return api.Errorf(api.CodeUnavailable, "%s %s%s answered %s", method, addr, path, resp.Status)
		}
		return &e
	}
	if out != nil {
		if err := json.Unmarshal(answer, out); err != nil {
			return api.Errorf(api.CodeUnavailable, "%s %s%s answered malformed JSON: %v", method, addr, path, err)
		}
	}
	return nil
}

func (f *forwarder) getJSON(ctx context.Context, addr, path string, out any) error {
	return f.do(ctx, http.MethodGet, addr, path, nil, out)
}
