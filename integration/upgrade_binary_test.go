package integration

import (
	"bufio"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/discoverd/discoverd/api"
	"github.com/discoverd/discoverd/fsm"
)

// metricOf scrapes one sample (name with its labels, as printed) from a
// node's /metrics; -1 when it is missing.
func metricOf(t *testing.T, url, sample string) float64 {
	t.Helper()
	resp, err := http.Get(url + "/metrics")
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), sample+" "); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return f
		}
	}
	return -1
}

// TestBinaryRollingUpgrade runs a 3-voter cluster of the built binary
// standing in for the previous release (DISCOVERD_CLAIM_MAX_COMMAND_TYPE),
// and upgrades it one node at a time (SIGTERM, start the new release on
// the same data dir) while registrations go on through every node. Every
// registration acknowledged is in the registry of every voter at the end;
// the upgraded cluster writes the compact form; no node stops on an entry.
func TestBinaryRollingUpgrade(t *testing.T) {
	t.Setenv("DISCOVERD_CLAIM_MAX_COMMAND_TYPE", strconv.Itoa(int(fsm.BaselineCommandType)))
	ports := FreePorts(t, 9)
	var peers []string
	for i := 0; i < 3; i++ {
		peers = append(peers, "127.0.0.1:"+strconv.Itoa(ports[3*i]))
	}
	args := func(i int) []string {
		return []string{
			"--peers", strings.Join(peers, ","),
			"--nats-addr", "127.0.0.1:" + strconv.Itoa(ports[3*i+1]),
			"--nats-cluster-addr", "127.0.0.1:" + strconv.Itoa(ports[3*i+2]),
			"--instance-ttl", "10m",
			"--log-level", "error",
		}
	}
	ds := make([]*daemon, 3)
	var wg sync.WaitGroup
	for i := range ds {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ds[i] = runDaemon(t, t.TempDir(), peers[i], args(i)...)
		}()
	}
	wg.Wait()
	var current sync.Map // index -> *daemon, read by the load
	for i, d := range ds {
		current.Store(i, d)
	}
	mustDo(t, "PUT", ds[0].url()+"/services/web", api.ServiceConfig{})

	// The load: writers register new instances through every node, and
	// retry an answer marked retryable or a refused connection elsewhere,
	// as a client would. Only a 200 counts as acknowledged.
	var acked sync.Map
	var ackedN atomic.Int64
	stop := make(chan struct{})
	var load sync.WaitGroup
	for w := 0; w < 3; w++ {
		load.Add(1)
		go func() {
			defer load.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				d, _ := current.Load((w + i) % 3)
				id := fmt.Sprintf("w%d-%d", w, i)
				code, _ := do(t, "PUT", d.(*daemon).url()+"/services/web/instances/"+id,
					api.Instance{Addr: fmt.Sprintf("10.%d.%d.%d:80", w, i/250%250, i%250+1), Proto: "http"})
				if code == http.StatusOK {
					acked.Store(id, true)
					ackedN.Add(1)
				} else {
					time.Sleep(20 * time.Millisecond)
				}
			}
		}()
	}
	WaitFor(t, 20*time.Second, "registrations on the old release", func() bool { return ackedN.Load() >= 50 })
	for _, d := range ds {
		if got := metricOf(t, d.url(), `discoverd_raft_commands_applied_total{command="add_instance_compact"}`); got != 0 {
			t.Fatalf("%s applied %v compact registrations on the old release", d.addr, got)
		}
	}

	t.Setenv("DISCOVERD_CLAIM_MAX_COMMAND_TYPE", "")
	for i := range ds {
		before := ackedN.Load()
		if err := ds[i].stop(syscall.SIGTERM); err != nil {
			t.Fatalf("stopping %s for its upgrade: %v", ds[i].addr, err)
		}
		ds[i] = runDaemon(t, ds[i].dir, peers[i], args(i)...)
		current.Store(i, ds[i])
		WaitFor(t, 30*time.Second, fmt.Sprintf("registrations to go on after upgrading %s", ds[i].addr), func() bool {
			return ackedN.Load() >= before+50
		})
	}
	WaitFor(t, 30*time.Second, "every node to find every voter on the new release", func() bool {
		for _, d := range ds {
			if metricOf(t, d.url(), "discoverd_cluster_max_command_type") != float64(fsm.MaxCommandType) {
				return false
			}
		}
		return true
	})
	WaitFor(t, 30*time.Second, "the upgraded cluster to write compact registrations", func() bool {
		for _, d := range ds {
			if metricOf(t, d.url(), `discoverd_raft_commands_applied_total{command="add_instance_compact"}`) <= 0 {
				return false
			}
		}
		return true
	})
	close(stop)
	load.Wait()

	var want []string
	acked.Range(func(k, _ any) bool { want = append(want, k.(string)); return true })
	t.Logf("%d registrations acknowledged across the upgrade", len(want))
	for _, d := range ds {
		WaitFor(t, 30*time.Second, fmt.Sprintf("%s to hold every acknowledged registration", d.addr), func() bool {
			code, b := do(t, "GET", d.url()+"/services/web/instances", nil)
			if code != http.StatusOK {
				return false
			}
			for _, id := range want {
				if !strings.Contains(string(b), `"id":"`+id+`"`) {
					return false
				}
			}
			return true
		})
		select {
		case err := <-d.done:
			t.Fatalf("%s exited during the upgrade: %v", d.addr, err)
		default:
		}
	}
}
