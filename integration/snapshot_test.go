package integration

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/discoverd/discoverd/api"
	"github.com/discoverd/discoverd/snapshot"
)

func getSnapshot(t *testing.T, url string) []byte {
	t.Helper()
	resp, err := http.Get(url + "/raft/snapshot")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /raft/snapshot: %d %v %.200s", resp.StatusCode, err, b)
	}
	return b
}

func putSnapshot(t *testing.T, url string, data []byte) (int, []byte) {
	t.Helper()
	req, _ := http.NewRequest("PUT", url+"/raft/snapshot", bytes.NewReader(data))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// registryOf is a voter's registry as comparable text: every service with
// its config, instances (id, addr, proto, meta, index), leader and meta.
func registryOf(t *testing.T, nd *Node) string {
	t.Helper()
	f := nd.Node().FSM()
	var sb strings.Builder
	for _, name := range f.Services() {
		cfg, _ := f.ServiceConfig(name)
		insts, _ := f.Instances(name)
		leader, _ := f.Leader(name)
		meta, _ := f.ServiceMeta(name)
		fmt.Fprintf(&sb, "%s %s\n", name, cfg.LeaderType)
		for _, in := range insts {
			b, _ := json.Marshal(in)
			fmt.Fprintf(&sb, "  %s\n", b)
		}
		if leader != nil {
			fmt.Fprintf(&sb, "  leader %s\n", leader.ID)
		}
		if meta != nil {
			fmt.Fprintf(&sb, "  meta %d %s\n", meta.Index, meta.Data)
		}
	}
	return sb.String()
}

// registryOfFile is registryOf for the registry a snapshot file holds.
func registryOfFile(t *testing.T, data []byte) string {
	t.Helper()
	f, err := snapshot.Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	reg, err := f.DecodeRegistry()
	if err != nil {
		t.Fatal(err)
	}
	var sb strings.Builder
	for _, s := range reg.Services {
		fmt.Fprintf(&sb, "%s %s\n", s.Name, s.Config.LeaderType)
		slices.SortFunc(s.Instances, func(a, b *api.Instance) int { return int(a.Index) - int(b.Index) })
		for _, in := range s.Instances {
			b, _ := json.Marshal(in)
			fmt.Fprintf(&sb, "  %s\n", b)
		}
		switch {
		case s.ManualLeader != "":
			fmt.Fprintf(&sb, "  leader %s\n", s.ManualLeader)
		case s.Config.LeaderType == api.LeaderTypeOldest && len(s.Instances) > 0:
			fmt.Fprintf(&sb, "  leader %s\n", s.Instances[0].ID)
		}
		if s.Meta != nil {
			fmt.Fprintf(&sb, "  meta %d %s\n", s.Meta.Index, s.Meta.Data)
		}
	}
	return sb.String()
}

// TestSnapshotRoundTripOnCluster saves a snapshot of a 3-voter cluster
// under a registration load, removes everything, restores the snapshot
// through a follower, and checks that every voter holds what was saved and
// that a watcher saw the difference as events. Damaged files are then
// refused with 400 and change nothing.
func TestSnapshotRoundTripOnCluster(t *testing.T) {
	c := NewCluster(t, 3, 0, WithTTL(time.Minute, 100*time.Millisecond))
	leader := c.WaitForLeader(10 * time.Second)
	follower := c.Followers()[0]
	mustDo(t, "PUT", leader.URL()+"/services/web", api.ServiceConfig{})
	mustDo(t, "PUT", leader.URL()+"/services/db", api.ServiceConfig{LeaderType: api.LeaderTypeManual})
	mustDo(t, "PUT", leader.URL()+"/services/load", api.ServiceConfig{})
	for i := 0; i < 40; i++ {
		mustDo(t, "PUT", follower.URL()+fmt.Sprintf("/services/web/instances/w%02d", i),
			api.Instance{Addr: fmt.Sprintf("10.0.1.%d:80", i+1), Proto: "http", Meta: map[string]string{"n": fmt.Sprint(i)}})
	}
	for i := 0; i < 5; i++ {
		mustDo(t, "PUT", leader.URL()+fmt.Sprintf("/services/db/instances/d%d", i), api.Instance{Addr: fmt.Sprintf("10.0.2.%d:5432", i+1), Proto: "tcp"})
	}
	mustDo(t, "PUT", leader.URL()+"/services/db/leader", api.Instance{ID: "d3"})
	mustDo(t, "PUT", leader.URL()+"/services/web/meta", api.ServiceMeta{Data: json.RawMessage(`{"version":7}`)})

	// 1. Save under load: registrations go on through every voter while
	// the snapshot is taken; each acknowledged before the save began is in it.
	var acked sync.Map
	var ackedCount atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := 0; w < 3; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				id := fmt.Sprintf("l%d-%d", w, i)
				if code, _ := register(t, c.Nodes[w].URL(), "load", id, fmt.Sprintf("10.1.%d.%d:80", w, i%250+1)); code == 200 {
					acked.Store(id, true)
					ackedCount.Add(1)
				}
			}
		}()
	}
	WaitFor(t, 10*time.Second, "registrations under load", func() bool { return ackedCount.Load() >= 30 })
	var before []string
	acked.Range(func(k, _ any) bool { before = append(before, k.(string)); return true })
	saved := getSnapshot(t, follower.URL())
	close(stop)
	wg.Wait()
	f, err := snapshot.Parse(saved)
	if err != nil {
		t.Fatalf("the saved snapshot does not verify: %v", err)
	}
	reg, err := f.DecodeRegistry()
	if err != nil {
		t.Fatal(err)
	}
	inSnap := map[string]bool{}
	for _, s := range reg.Services {
		if s.Name == "load" {
			for _, in := range s.Instances {
				inSnap[in.ID] = true
			}
		}
	}
	for _, id := range before {
		if !inSnap[id] {
			t.Fatalf("registration %s, acknowledged before the save, is not in the snapshot", id)
		}
	}
	if f.Header.Services != 3 || f.Header.Instances != 45+len(inSnap) || f.Header.Index != reg.Index {
		t.Errorf("header %+v does not describe the registry (3 services, %d instances, index %d)", f.Header, 45+len(inSnap), reg.Index)
	}
	want := registryOfFile(t, saved)

	// 2. Remove everything, with a watcher on web.
	watcher := openSSE(t, c.Nodes[2].URL()+"/services/web")
	for ev := watcher.next(t, 10*time.Second); ev.Kind != api.EventCurrent; ev = watcher.next(t, 10*time.Second) {
	}
	mustDo(t, "DELETE", leader.URL()+"/services/db", nil)
	mustDo(t, "DELETE", leader.URL()+"/services/load", nil)
	for i := 0; i < 40; i++ {
		mustDo(t, "DELETE", leader.URL()+fmt.Sprintf("/services/web/instances/w%02d", i), nil)
	}
	mustDo(t, "PUT", leader.URL()+"/services/other", api.ServiceConfig{})
	downs := 0
	for downs < 40 {
		if ev := watcher.next(t, 10*time.Second); ev.Kind == api.EventDown {
			downs++
		}
	}

	// 3. Restore, through a follower (forwarded to the leader).
	code, body := putSnapshot(t, c.Followers()[1].URL(), saved)
	if code != http.StatusOK {
		t.Fatalf("PUT /raft/snapshot: %d %s", code, body)
	}
	var restored api.AppliedCommand
	json.Unmarshal(body, &restored)
	if restored.Index <= reg.Index {
		t.Errorf("restored at index %d, not past the backup's %d", restored.Index, reg.Index)
	}

	// 4. Every voter has the saved services, instances and meta.
	for _, nd := range c.Nodes {
		WaitFor(t, 20*time.Second, fmt.Sprintf("voter %d to hold the restored registry", nd.Index), func() bool {
			return registryOf(t, nd) == want
		})
		if idx := nd.Node().AppliedIndex(); idx < restored.Index {
			t.Errorf("voter %d applied index %d, before the restore's %d", nd.Index, idx, restored.Index)
		}
	}
	// The watcher saw the difference: every web instance came back up.
	ups := map[string]bool{}
	for len(ups) < 40 {
		ev := watcher.next(t, 10*time.Second)
		if ev.Kind == api.EventUp {
			ups[ev.Instance.ID] = true
		}
	}
	// Writes go on after a restore, at indexes past it.
	var inst api.Instance
	json.Unmarshal(mustDo(t, "PUT", follower.URL()+"/services/web/instances/after", api.Instance{Addr: "10.0.9.9:80", Proto: "http"}), &inst)
	if inst.Index <= restored.Index {
		t.Errorf("a registration after the restore got index %d, not past %d", inst.Index, restored.Index)
	}

	// Damaged, truncated and foreign files are refused and change nothing.
	stateBefore := registryOf(t, leader)
	flip := func(at int) []byte {
		b := bytes.Clone(saved)
		b[at] ^= 0x20
		return b
	}
	resum := func(b []byte) []byte {
		last := bytes.LastIndexByte(b[:len(b)-1], '\n') + 1
		sum := sha256.Sum256(b[:last])
		return append(b[:last:last], []byte("sha256 "+hex.EncodeToString(sum[:])+"\n")...)
	}
	badName := resum(bytes.Replace(bytes.Clone(saved), []byte(`"name":"db"`), []byte(`"name":"d b"`), 1))
	for _, tc := range []struct {
		name string
		data []byte
		want string
	}{
		{"a flipped byte in the registry", flip(len(saved) / 2), "checksum mismatch"},
		{"a flipped byte in the header", flip(len(snapshot.Magic) + 5), "checksum mismatch"},
		{"a flipped byte in the checksum", flip(len(saved) - 3), "checksum"},
		{"the end cut off", saved[:len(saved)-10], "checksum line"},
		{"cut in half", saved[:len(saved)/2], "checksum line"},
		{"only the magic line", saved[:len(snapshot.Magic)], "checksum line"},
		{"empty", nil, "empty"},
		{"another program's file", []byte("{\"index\":3,\"services\":[]}\n"), "does not start with"},
		{"a gzip file", []byte("\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03"), "does not start with"},
		{"a valid checksum over a bad service name", badName, "service name"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body := putSnapshot(t, c.Nodes[tc.name[0]%3].URL(), tc.data)
			var e api.Error
			if code != http.StatusBadRequest || json.Unmarshal(body, &e) != nil || !strings.Contains(e.Message, tc.want) {
				t.Fatalf("PUT /raft/snapshot: %d %s, want 400 saying %q", code, body, tc.want)
			}
		})
	}
	for _, nd := range c.Nodes {
		WaitFor(t, 10*time.Second, fmt.Sprintf("voter %d to be unchanged by the refused files", nd.Index), func() bool {
			return registryOf(t, nd) == stateBefore
		})
	}
}
