package integration

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/discoverd/discoverd/api"
	"github.com/discoverd/discoverd/node"
)

// With Raft's CommitTimeout at ten minutes, a follower learns that an entry
// is committed only from the next AppendEntries that brings new entries:
// the leader's commit nudge (a barrier issued once it applied the entry).
// Without the nudge, the writes below would reach the followers' logs but
// not their state machines within the test's deadline.
func TestCommitNudgeTellsFollowersTheCommitIndexWithoutCommitTimeout(t *testing.T) {
	// A TTL of a minute: no instance expires (an expiry is a write too)
	// while the test counts.
	c := NewCluster(t, 3, 0, WithRaftTimeout(0), WithTTL(time.Minute, time.Second), WithNodeConfig(func(_ int, cfg *node.Config) {
		cfg.RaftCommitTimeout = 10 * time.Minute
	}))
	leader := c.WaitForLeader(30 * time.Second)
	followers := c.Followers()
	if len(followers) != 2 {
		t.Fatalf("%d followers, want 2", len(followers))
	}
	waitFollowersApplied := func(what string, index uint64) {
		t.Helper()
		for _, f := range followers {
			WaitFor(t, 30*time.Second, fmt.Sprintf("%s applied at index %d on follower %s", what, index, f.Addr), func() bool {
				return f.Node().AppliedIndex() >= index
			})
		}
	}
	// Whatever the nodes wrote while starting is applied everywhere before
	// the nudges are counted.
	waitFollowersApplied("start-up", leader.Node().AppliedIndex())
	before := commitNudges(t, leader.URL())
	commandsBefore := commandsApplied(t, leader.URL())
	followersBefore := make([]float64, len(followers))
	for i, f := range followers {
		followersBefore[i] = commitNudges(t, f.URL())
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	index, err := leader.Node().AddService(ctx, "web", api.ServiceConfig{})
	if err != nil {
		t.Fatal(err)
	}
	waitFollowersApplied("the service", index)

	const writes = 3
	for i := range writes {
		if code, b := register(t, leader.URL(), "web", fmt.Sprintf("i%d", i), fmt.Sprintf("10.0.0.%d:80", i+1)); code != 200 {
			t.Fatalf("register through the leader: %d %s", code, b)
		}
		// The leader answered once it applied the registration.
		waitFollowersApplied("a registration", leader.Node().AppliedIndex())
	}
	// Each write was seen by the followers without waiting for a later one.
	for _, f := range followers {
		if got, err := f.Node().Instances("web"); err != nil || len(got) != writes {
			t.Fatalf("follower %s has %d instances (%v), want %d", f.Addr, len(got), err, writes)
		}
	}

	// A write through a follower is answered once the follower has applied
	// it (read-your-writes): the follower too learns the commit index from
	// the nudge.
	via := followers[0]
	if code, b := register(t, via.URL(), "web", "via-follower", "10.0.1.1:80"); code != 200 {
		t.Fatalf("register through a follower: %d %s", code, b)
	}
	got, err := via.Node().Instances("web")
	if err != nil || len(got) != writes+1 {
		t.Fatalf("follower %s has %d instances (%v) right after a write through it, want %d", via.Addr, len(got), err, writes+1)
	}

	// Reads write nothing, so they bring no nudge.
	for range 3 {
		if code, b := do(t, "GET", leader.URL()+"/services/web/instances?consistent=true", nil); code != 200 {
			t.Fatalf("consistent read: %d %s", code, b)
		}
	}
	// A barrier is issued only after commands were applied, and is itself
	// not applied by the state machine: the leader never issues more
	// barriers than it applied commands (the nodes may announce themselves
	// meanwhile, and a registration may bring its service's leader), so it
	// neither keeps issuing barriers of its own nor nudges an idle cluster.
	// One more is allowed: the nudge for the last start-up write may have
	// been issued after the counters were first read.
	nudges := commitNudges(t, leader.URL()) - before
	commands := commandsApplied(t, leader.URL()) - commandsBefore
	if nudges < 1 || nudges > commands+1 {
		t.Fatalf("leader issued %v commit nudges for %v commands, want 1 to %v", nudges, commands, commands+1)
	}
	for i, f := range followers {
		if got := commitNudges(t, f.URL()); got != followersBefore[i] {
			t.Fatalf("follower %s issued %v commit nudges while following", f.Addr, got-followersBefore[i])
		}
	}
}

// commitNudges is a voter's discoverd_raft_commit_nudges_total.
func commitNudges(t *testing.T, base string) float64 {
	t.Helper()
	fams, err := scrapeMetrics(base)
	if err != nil {
		t.Fatal(err)
	}
	v, ok := metric(fams, "discoverd_raft_commit_nudges_total")
	if !ok {
		t.Fatal("discoverd_raft_commit_nudges_total is missing")
	}
	return v
}

// commandsApplied is the sum over command types of a voter's
// discoverd_raft_commands_applied_total.
func commandsApplied(t *testing.T, base string) float64 {
	t.Helper()
	fams, err := scrapeMetrics(base)
	if err != nil {
		t.Fatal(err)
	}
	f, ok := fams["discoverd_raft_commands_applied_total"]
	if !ok {
		t.Fatal("discoverd_raft_commands_applied_total is missing")
	}
	var sum float64
	for _, m := range f.Metric {
		sum += m.GetCounter().GetValue()
	}
	return sum
}
