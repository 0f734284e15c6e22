//go:build compose

// The docker-compose fault tests: each scenario (compose_scenarios_test.go)
// brings up docker-compose.yml + docker-compose.test.yml as project
// "discoverdtest" (3 voters, 2 proxies, every node's HTTP and NATS ports
// published on 127.0.0.1), runs the workload of compose_workload_test.go
// through the Go client, injects its fault with the Docker CLI, heals it and
// checks the invariants. Run them with `make test-cluster`, or:
//
//	go test -tags compose -count=1 -timeout 20m -v -run Compose ./integration
//
// They need a Docker engine and docker-compose v1.29+; the image is built
// from the working tree (scripts/cluster.sh image) once per run.
// DISCOVERD_COMPOSE_KEEP=1 leaves the cluster of a failed test running;
// DISCOVERD_COMPOSE_ARTIFACTS=dir keeps container logs and porcupine
// visualizations there (default: a temp dir, kept when a test fails).

package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/discoverd/discoverd/api"
)

// composeSpec says which compose project a test brings up and which host
// ports it publishes, so that the fault scenarios and the soak can run side
// by side.
type composeSpec struct {
	Project string
	// HTTPBase and NATSBase are voter1's published ports; the other nodes
	// (voter2, voter3, proxy1, proxy2) take the next four.
	HTTPBase, NATSBase int
}

// scenarioSpec is the fault scenarios' project (docker-compose.test.yml's
// default ports).
var scenarioSpec = composeSpec{Project: "discoverdtest", HTTPBase: 21111, NATSBase: 24211}

const (
	// composeTTL and composeExpiryCheck are the cluster's --instance-ttl and
	// --expiry-check-interval: short, so that a fault outlasts the TTL in a
	// few seconds.
	composeTTL         = 5 * time.Second
	composeExpiryCheck = 500 * time.Millisecond
	// composeConverge is how soon after a heal the cluster must agree again.
	composeConverge = 10 * time.Second
)

// composeNode is one container of the test cluster.
type composeNode struct {
	Name     string // compose service: voter1 ... proxy2
	Voter    bool
	HTTPPort int // published on 127.0.0.1
	NATSPort int
	id       string // container id
}

// Advertise is the node's address inside the cluster network.
func (n *composeNode) Advertise() string { return n.Name + ".cluster:1111" }

// Host is the node's published HTTP address, as the client sees it.
func (n *composeNode) Host() string { return "127.0.0.1:" + strconv.Itoa(n.HTTPPort) }

// URL is the node's published HTTP URL.
func (n *composeNode) URL() string { return "http://" + n.Host() }

// NATSURL is the node's published NATS URL.
func (n *composeNode) NATSURL() string { return "nats://127.0.0.1:" + strconv.Itoa(n.NATSPort) }

// composeCluster drives one compose project.
type composeCluster struct {
	t       *testing.T
	project string
	root    string
	env     []string
	Nodes   []*composeNode
	// artifacts receives container logs and visualizations.
	artifacts string

	mu sync.Mutex
	// timeline is what the test did to the cluster, for the report.
	timeline []string
	// isolated lists, per node host, the windows during which the node was
	// cut off from the other nodes (its answers then do not count as the
	// majority's).
	isolated map[string][]window
}

type window struct{ from, to time.Time }

var (
	composeImageOnce sync.Once
	composeImageErr  error
)

func composeRoot(t *testing.T) string {
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Dir(wd) // the tests run in integration/
}

// buildComposeImage builds the static binaries and the image from the
// working tree, once per test binary.
func buildComposeImage(t *testing.T, root string) {
	composeImageOnce.Do(func() {
		start := time.Now()
		cmd := exec.Command(filepath.Join(root, "scripts", "cluster.sh"), "image")
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "GO="+goCommand())
		out, err := cmd.CombinedOutput()
		if err != nil {
			composeImageErr = fmt.Errorf("scripts/cluster.sh image: %v\n%s", err, out)
			return
		}
		t.Logf("built the image in %v", time.Since(start).Round(100*time.Millisecond))
	})
	if composeImageErr != nil {
		t.Fatal(composeImageErr)
	}
}

func goCommand() string {
	if g := os.Getenv("GO"); g != "" {
		return g
	}
	if p := filepath.Join(os.Getenv("GOROOT"), "bin", "go"); os.Getenv("GOROOT") != "" {
		return p
	}
	return "go"
}

// newComposeCluster starts a fresh test cluster (removing any leftover of
// an earlier run, volumes included) and waits until every node serves and
// agrees on the Raft leader. It is torn down when the test ends.
func newComposeCluster(t *testing.T) *composeCluster {
	t.Helper()
	return newComposeClusterOf(t, scenarioSpec)
}

// newComposeClusterOf is newComposeCluster for the project and ports of spec.
func newComposeClusterOf(t *testing.T, spec composeSpec) *composeCluster {
	t.Helper()
	if out, err := exec.Command("docker", "info", "--format", "{{.ServerVersion}}").CombinedOutput(); err != nil {
		t.Fatalf("the compose tests need a Docker engine: docker info: %v: %s", err, bytes.TrimSpace(out))
	}
	root := composeRoot(t)
	buildComposeImage(t, root)
	c := &composeCluster{t: t, project: spec.Project, root: root, isolated: map[string][]window{}}
	for i, name := range []string{"voter1", "voter2", "voter3", "proxy1", "proxy2"} {
		c.Nodes = append(c.Nodes, &composeNode{
			Name: name, Voter: i < 3,
			HTTPPort: spec.HTTPBase + i, NATSPort: spec.NATSBase + i,
		})
	}
	c.env = append(os.Environ(),
		"DISCOVERD_IMAGE=discoverd:latest",
		"DISCOVERD_INSTANCE_TTL="+composeTTL.String(),
		"DISCOVERD_EXPIRY_CHECK_INTERVAL="+composeExpiryCheck.String(),
		"DISCOVERD_LOG_LEVEL=info",
	)
	for _, n := range c.Nodes {
		up := strings.ToUpper(n.Name)
		c.env = append(c.env,
			fmt.Sprintf("DISCOVERD_%s_HTTP_PORT=%d", up, n.HTTPPort),
			fmt.Sprintf("DISCOVERD_%s_NATS_PORT=%d", up, n.NATSPort))
	}
	c.artifacts = os.Getenv("DISCOVERD_COMPOSE_ARTIFACTS")
	if c.artifacts == "" {
		c.artifacts = filepath.Join(os.TempDir(), "discoverd-compose")
	}
	c.artifacts = filepath.Join(c.artifacts, t.Name())
	os.RemoveAll(c.artifacts)

	c.compose(2*time.Minute, "down", "-v", "--remove-orphans")
	for _, n := range c.Nodes {
		for _, p := range []int{n.HTTPPort, n.NATSPort} {
			ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
			if err != nil {
				t.Fatalf("port %d, which the test cluster publishes, is in use: %v", p, err)
			}
			ln.Close()
		}
	}
	start := time.Now()
	if _, err := c.composeErr(3*time.Minute, "up", "-d", "--no-build"); err != nil {
		c.saveLogs()
		c.compose(2*time.Minute, "down", "-v", "--remove-orphans")
		t.Fatal(err)
	}
	t.Cleanup(c.teardown)
	for _, n := range c.Nodes {
		n.id = strings.TrimSpace(c.compose(time.Minute, "ps", "-q", n.Name))
		if n.id == "" {
			t.Fatalf("no container for %s", n.Name)
		}
	}
	c.waitServing(90 * time.Second)
	c.note("cluster up in %v, raft leader %s", time.Since(start).Round(100*time.Millisecond), c.Leader().Name)
	return c
}

func (c *composeCluster) teardown() {
	failed := c.t.Failed()
	if failed || os.Getenv("DISCOVERD_COMPOSE_ARTIFACTS") != "" {
		c.saveLogs()
		c.t.Logf("container logs and artifacts: %s", c.artifacts)
	}
	if failed && os.Getenv("DISCOVERD_COMPOSE_KEEP") != "" {
		c.t.Logf("DISCOVERD_COMPOSE_KEEP: leaving project %s running", c.project)
		return
	}
	// Unpause anything paused, or docker-compose down waits on it.
	for _, n := range c.Nodes {
		exec.Command("docker", "unpause", n.id).Run()
	}
	c.compose(2*time.Minute, "down", "-v", "--remove-orphans", "-t", "5")
}

func (c *composeCluster) saveLogs() {
	if err := os.MkdirAll(c.artifacts, 0o755); err != nil {
		return
	}
	for _, n := range c.Nodes {
		if n.id == "" {
			continue
		}
		out, _ := exec.Command("docker", "logs", "--timestamps", n.id).CombinedOutput()
		os.WriteFile(filepath.Join(c.artifacts, n.Name+".log"), out, 0o644)
	}
}

// note records a step of the test in the timeline and the test log.
func (c *composeCluster) note(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	c.mu.Lock()
	c.timeline = append(c.timeline, time.Now().Format("15:04:05.000")+" "+msg)
	c.mu.Unlock()
	c.t.Logf("%s", msg)
}

func (c *composeCluster) composeArgs(args ...string) []string {
	return append([]string{"-p", c.project,
		"-f", filepath.Join(c.root, "docker-compose.yml"),
		"-f", filepath.Join(c.root, "docker-compose.test.yml")}, args...)
}

func (c *composeCluster) composeErr(timeout time.Duration, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "docker-compose", c.composeArgs(args...)...)
	cmd.Dir = c.root
	cmd.Env = c.env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("docker-compose %s: %v\n%s%s", strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String(), nil
}

func (c *composeCluster) compose(timeout time.Duration, args ...string) string {
	out, err := c.composeErr(timeout, args...)
	if err != nil {
		c.t.Logf("%v", err)
	}
	return out
}

// docker runs a docker command and fails the test if it fails.
func (c *composeCluster) docker(args ...string) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "docker", args...).CombinedOutput()
	if err != nil {
		c.t.Fatalf("docker %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

func containerIDs(nodes []*composeNode) ([]string, string) {
	var out, names []string
	for _, n := range nodes {
		out = append(out, n.id)
		names = append(names, n.Name)
	}
	return out, strings.Join(names, ",")
}

// Kill sends SIGKILL to the nodes' containers at once (a host dying).
func (c *composeCluster) Kill(nodes ...*composeNode) {
	c.t.Helper()
	list, names := containerIDs(nodes)
	c.docker(append([]string{"kill"}, list...)...)
	c.note("docker kill %s", names)
}

// Start starts stopped containers again, with their data volumes.
func (c *composeCluster) Start(nodes ...*composeNode) {
	c.t.Helper()
	list, names := containerIDs(nodes)
	c.docker(append([]string{"start"}, list...)...)
	c.note("docker start %s", names)
}

// Restart stops a container gracefully (SIGTERM, 10 s grace) and starts it.
func (c *composeCluster) Restart(n *composeNode) {
	c.t.Helper()
	c.docker("restart", "-t", "10", n.id)
	c.note("docker restart %s", n.Name)
}

// Pause freezes a container's processes (a host stalled, its sockets open).
func (c *composeCluster) Pause(n *composeNode) {
	c.t.Helper()
	c.docker("pause", n.id)
	c.note("docker pause %s", n.Name)
}

func (c *composeCluster) Unpause(n *composeNode) {
	c.t.Helper()
	c.docker("unpause", n.id)
	c.note("docker unpause %s", n.Name)
}

func (c *composeCluster) clusterNetwork() string { return c.project + "_cluster" }

// Isolate cuts a node off the cluster network: it can no longer reach the
// other nodes nor they it, while its published ports (on the access network)
// still answer its clients, as in a partition between hosts.
func (c *composeCluster) Isolate(n *composeNode) {
	c.t.Helper()
	c.docker("network", "disconnect", c.clusterNetwork(), n.id)
	c.mu.Lock()
	c.isolated[n.Host()] = append(c.isolated[n.Host()], window{from: time.Now()})
	c.mu.Unlock()
	c.note("docker network disconnect %s %s", c.clusterNetwork(), n.Name)
}

// Reconnect heals Isolate, with the node's name on the cluster network. It
// returns when it began: the partition ended somewhere during the command.
func (c *composeCluster) Reconnect(n *composeNode) time.Time {
	c.t.Helper()
	began := time.Now()
	c.docker("network", "connect", "--alias", n.Name+".cluster", "--alias", n.Name, c.clusterNetwork(), n.id)
	c.mu.Lock()
	ws := c.isolated[n.Host()]
	ws[len(ws)-1].to = time.Now()
	c.mu.Unlock()
	c.note("docker network connect %s %s", c.clusterNetwork(), n.Name)
	return began
}

// discount marks the nodes as under a fault from now on: their answers do
// not prove that the majority heard a heartbeat (see isolatedAt), until the
// returned func is called and grace has passed (a node that was paused or
// cut off may still take itself for the leader for a moment).
func (c *composeCluster) discount(grace time.Duration, nodes ...*composeNode) (end func()) {
	c.mu.Lock()
	for _, n := range nodes {
		c.isolated[n.Host()] = append(c.isolated[n.Host()], window{from: time.Now()})
	}
	c.mu.Unlock()
	return func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		for _, n := range nodes {
			ws := c.isolated[n.Host()]
			ws[len(ws)-1].to = time.Now().Add(grace)
		}
	}
}

// isolatedAt reports whether the node at host was cut off at some time in
// [from, to].
func (c *composeCluster) isolatedAt(host string, from, to time.Time) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, w := range c.isolated[host] {
		end := w.to
		if end.IsZero() {
			end = time.Now().Add(time.Hour)
		}
		if !to.Before(w.from) && !from.After(end) {
			return true
		}
	}
	return false
}

// Voters and Proxies of the cluster.
func (c *composeCluster) Voters() []*composeNode  { return c.Nodes[:3] }
func (c *composeCluster) Proxies() []*composeNode { return c.Nodes[3:] }

func (c *composeCluster) byAdvertise(addr string) *composeNode {
	for _, n := range c.Nodes {
		if n.Advertise() == addr {
			return n
		}
	}
	return nil
}

// plain is the test's own HTTP client for checks, outside the history.
var composeHTTP = &http.Client{Timeout: 3 * time.Second}

func composeGetJSON(url string, out any) (int, error) {
	resp, err := composeHTTP.Get(url)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return resp.StatusCode, err
	}
	if resp.StatusCode/100 != 2 {
		return resp.StatusCode, fmt.Errorf("GET %s: %s: %s", url, resp.Status, bytes.TrimSpace(b))
	}
	if out != nil {
		return resp.StatusCode, json.Unmarshal(b, out)
	}
	return resp.StatusCode, nil
}

func (n *composeNode) status() (*api.Status, error) {
	var st api.Status
	if _, err := composeGetJSON(n.URL()+"/.well-known/status", &st); err != nil {
		return nil, err
	}
	return &st, nil
}

// readsReady reports whether a voter serves reads: once it has caught up
// after start it answers 404 for a service that does not exist (503 before).
func (n *composeNode) readsReady() bool {
	code, _ := composeGetJSON(n.URL()+"/services/readiness-probe/leader", nil)
	return code == http.StatusNotFound || code == http.StatusOK
}

// Leader returns the voter that the majority of the voters name as Raft
// leader, or nil.
func (c *composeCluster) Leader() *composeNode {
	votes := map[string]int{}
	for _, v := range c.Voters() {
		if st, err := v.status(); err == nil && st.Leader != "" {
			votes[st.Leader]++
		}
	}
	for addr, n := range votes {
		if n >= 2 {
			return c.byAdvertise(addr)
		}
	}
	return nil
}

// WaitLeader waits for a Raft leader the majority agrees on.
func (c *composeCluster) WaitLeader(timeout time.Duration) *composeNode {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if l := c.Leader(); l != nil {
			if st, err := l.status(); err == nil && st.Role == "leader" {
				return l
			}
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("no raft leader within %v", timeout)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Followers are the voters other than the current leader.
func (c *composeCluster) Followers() []*composeNode {
	l := c.WaitLeader(30 * time.Second)
	var out []*composeNode
	for _, v := range c.Voters() {
		if v != l {
			out = append(out, v)
		}
	}
	return out
}

// serving reports whether every node answers, is healthy and names the same
// leader, and every voter is ready to serve reads.
func (c *composeCluster) serving() (bool, string) {
	leader := ""
	for _, n := range c.Nodes {
		st, err := n.status()
		if err != nil {
			return false, fmt.Sprintf("%s: %v", n.Name, err)
		}
		if !st.Healthy || st.Leader == "" {
			return false, fmt.Sprintf("%s: not healthy (%+v)", n.Name, *st)
		}
		if leader != "" && st.Leader != leader {
			return false, fmt.Sprintf("%s names leader %s, another node %s", n.Name, st.Leader, leader)
		}
		leader = st.Leader
		if n.Voter && !n.readsReady() {
			return false, n.Name + " does not serve reads yet"
		}
	}
	return true, ""
}

// waitServing waits until serving.
func (c *composeCluster) waitServing(timeout time.Duration) {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, why := c.serving()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("the cluster did not serve within %v: %s", timeout, why)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// waitNode waits until one node answers its status as healthy and, for a
// voter, serves reads.
func (c *composeCluster) waitNode(n *composeNode, timeout time.Duration) {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		st, err := n.status()
		if err == nil && st.Healthy {
			if !n.Voter || n.readsReady() {
				return
			}
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("%s did not serve within %v (status %+v, %v)", n.Name, timeout, st, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
