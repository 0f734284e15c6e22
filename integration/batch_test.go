package integration

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/discoverd/discoverd/api"
	"github.com/discoverd/discoverd/fsm"
	"github.com/discoverd/discoverd/node"
)

// registration is one concurrent PUT of an instance and its answer.
type registration struct {
	service, id string
	status      int
	inst        api.Instance
	err         api.Error
	failure     string
}

// registerConcurrently sends every registration at once, each through the
// node at the same position of bases (cycling), and fills in the answers.
func registerConcurrently(bases []string, regs []*registration) {
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i, r := range regs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			body, _ := json.Marshal(api.Instance{Addr: fmt.Sprintf("10.0.%d.%d:80", i/250, i%250+1), Proto: "http"})
			req, err := http.NewRequest("PUT", bases[i%len(bases)]+"/services/"+r.service+"/instances/"+r.id, bytes.NewReader(body))
			if err != nil {
				r.failure = err.Error()
				return
			}
			authorize(req)
			<-start
			resp, err := helperClient().Do(req)
			if err != nil {
				r.failure = err.Error()
				return
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			r.status = resp.StatusCode
			if r.status == http.StatusOK {
				err = json.Unmarshal(b, &r.inst)
			} else {
				err = json.Unmarshal(b, &r.err)
			}
			if err != nil {
				r.failure = fmt.Sprintf("%d %s: %v", r.status, b, err)
			}
		}()
	}
	close(start)
	wg.Wait()
}

// batchesApplied is how many add_instances entries every voter applied
// (the fewest of them).
func batchesApplied(t *testing.T, c *Cluster) uint64 {
	t.Helper()
	var least uint64
	for i, nd := range c.Nodes {
		got := appliedOf(t, nd.Node(), fsm.CmdAddInstances)
		if i == 0 || got < least {
			least = got
		}
	}
	return least
}

// TestConcurrentRegistrationsThroughAFollower registers many instances at
// once through a follower of a 3-voter cluster, with one of them into a
// service that does not exist. The leader writes them in batches: each
// registration gets its own index, the bad one fails alone with its own
// error, and a read through the follower right after sees every one.
func TestConcurrentRegistrationsThroughAFollower(t *testing.T) {
	c := NewCluster(t, 3, 0, WithTTL(time.Minute, 100*time.Millisecond))
	waitAnnounced(t, c, map[int]fsm.CommandType{0: fsm.MaxCommandType, 1: fsm.MaxCommandType, 2: fsm.MaxCommandType})
	leader := c.WaitForLeader(10 * time.Second)
	follower := c.Followers()[0]
	mustDo(t, "PUT", leader.URL()+"/services/web", api.ServiceConfig{})

	seen := map[uint64]string{}
	var registered []string
	// Batches form when registrations arrive while others are being
	// written; a machine busy enough to serialize one round gets another.
	for round := 0; round < 5 && (round == 0 || batchesApplied(t, c) == 0); round++ {
		var regs []*registration
		for i := 0; i < 64; i++ {
			regs = append(regs, &registration{service: "web", id: fmt.Sprintf("r%d-%d", round, i)})
		}
		bad := &registration{service: "nosuch", id: fmt.Sprintf("bad-%d", round)}
		regs = append(regs[:32], append([]*registration{bad}, regs[32:]...)...)
		registerConcurrently([]string{follower.URL()}, regs)

		for _, r := range regs {
			switch {
			case r.failure != "":
				t.Fatalf("%s/%s: %s", r.service, r.id, r.failure)
			case r == bad:
				if r.status != http.StatusNotFound || r.err.Code != api.CodeNotFound {
					t.Errorf("registration into a missing service: %d %+v, want 404 %s", r.status, r.err, api.CodeNotFound)
				}
			case r.status != http.StatusOK:
				t.Errorf("%s: %d %+v", r.id, r.status, r.err)
			case r.inst.ID != r.id || r.inst.Index == 0:
				t.Errorf("%s: answered %+v", r.id, r.inst)
			case seen[r.inst.Index] != "":
				t.Errorf("%s and %s both got index %d", seen[r.inst.Index], r.id, r.inst.Index)
			default:
				seen[r.inst.Index] = r.id
				registered = append(registered, r.id)
			}
		}
		if t.Failed() {
			t.FailNow()
		}

		// Read your writes through the follower that answered: every
		// registration, at the index it was answered with, in order of
		// index, the oldest leading.
		insts := instances(t, follower.URL(), "web")
		var got []string
		for i, in := range insts {
			if seen[in.Index] != in.ID {
				t.Errorf("the follower holds %s at index %d, answered as %q", in.ID, in.Index, seen[in.Index])
			}
			if i > 0 && in.Index <= insts[i-1].Index {
				t.Errorf("instances out of order of index: %d after %d", in.Index, insts[i-1].Index)
			}
			got = append(got, in.ID)
		}
		for _, id := range registered {
			if !slices.Contains(got, id) {
				t.Errorf("a read through the follower lacks %s, which it acknowledged", id)
			}
		}
		var l api.Instance
		if err := json.Unmarshal(mustDo(t, "GET", follower.URL()+"/services/web/leader", nil), &l); err != nil || l.ID != insts[0].ID {
			t.Errorf("leader %+v (%v), want the oldest, %s", l, err, insts[0].ID)
		}
		if _, err := follower.Node().FSM().Instances("nosuch"); !api.IsCode(err, api.CodeNotFound) {
			t.Errorf("the rejected registration created its service: %v", err)
		}
	}
	if batchesApplied(t, c) == 0 {
		t.Fatal("no voter applied an add_instances entry for concurrent registrations")
	}
}

// TestNoBatchesUntilEveryVoterAppliesThem runs a voter that announces the
// release before batches: concurrent registrations are written one per
// entry, and every voter applies them.
func TestNoBatchesUntilEveryVoterAppliesThem(t *testing.T) {
	old := fsm.CmdAddInstanceCompact
	c := NewCluster(t, 3, 0, WithTTL(time.Minute, 100*time.Millisecond), WithNodeConfig(func(i int, cfg *node.Config) {
		if i == 2 {
			cfg.MaxCommandType = old
		}
	}))
	waitAnnounced(t, c, map[int]fsm.CommandType{0: fsm.MaxCommandType, 1: fsm.MaxCommandType, 2: old})
	mustDo(t, "PUT", c.WaitForLeader(10*time.Second).URL()+"/services/web", api.ServiceConfig{})
	var bases []string
	for _, nd := range c.Nodes {
		bases = append(bases, nd.URL())
	}
	var regs []*registration
	var ids []string
	for i := 0; i < 96; i++ {
		regs = append(regs, &registration{service: "web", id: fmt.Sprintf("r%d", i)})
		ids = append(ids, regs[i].id)
	}
	registerConcurrently(bases, regs)
	for _, r := range regs {
		if r.failure != "" || r.status != http.StatusOK {
			t.Fatalf("%s: %d %+v %s", r.id, r.status, r.err, r.failure)
		}
	}
	for _, nd := range c.Nodes {
		WaitFor(t, 10*time.Second, fmt.Sprintf("voter %d to apply the registrations", nd.Index), func() bool {
			return holdsAll(nd.Node(), "web", ids)
		})
		if got := appliedOf(t, nd.Node(), fsm.CmdAddInstances); got != 0 {
			t.Errorf("voter %d applied %d batches while a voter does not apply them", nd.Index, got)
		}
		if got := appliedOf(t, nd.Node(), fsm.CmdAddInstanceCompact); got < uint64(len(ids)) {
			t.Errorf("voter %d applied %d single registrations, want at least %d", nd.Index, got, len(ids))
		}
	}
}
