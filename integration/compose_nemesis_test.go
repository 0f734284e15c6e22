//go:build compose

package integration

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// The nemesis of the soak (compose_soak_test.go): it injects one fault at a
// time into a compose cluster, holds it, heals it and waits for the cluster
// to serve again. Network faults are made with iptables and tc inside the
// node's network namespace, entered from the host with nsenter (the image
// is FROM scratch: it has no shell nor tools). They act on the node's
// interface on the cluster network only, so its clients still reach it on
// its published ports, as in a fault between hosts. The kernel may lack
// netem: packet loss is an iptables statistic match, a slow link a tbf
// rate limit.

type faultKind string

const (
	faultKill       faultKind = "kill"
	faultPause      faultKind = "pause"
	faultPartition  faultKind = "partition"
	faultAsymmetric faultKind = "asymmetric"
	faultLoss       faultKind = "loss"
	faultSlow       faultKind = "slow"
	faultRolling    faultKind = "rolling-restart"
)

// faultGraceAnswer is how long after a fault on a node its answers still do
// not count as heard by the majority: a node that was paused or cut off may
// take itself for the leader until it hears otherwise.
const faultGraceAnswer = 2 * time.Second

// faultKinds in the order the summary lists them.
var faultKinds = []faultKind{faultKill, faultPause, faultPartition, faultAsymmetric, faultLoss, faultSlow, faultRolling}

type nemesis struct {
	c   *composeCluster
	w   *composeWorkload
	rng *rand.Rand
	// round is the kinds still to inject in this round: every kind once per
	// round, in a random order, so that a run of a few rounds has them all.
	round  []faultKind
	counts map[faultKind]int
	total  int
}

func newNemesis(c *composeCluster, w *composeWorkload, seed uint64) *nemesis {
	return &nemesis{c: c, w: w, rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)), counts: map[faultKind]int{}}
}

// hold is how long a fault lasts: from well under the instance TTL to
// three times it.
func (m *nemesis) hold() time.Duration {
	return time.Duration(2000+m.rng.IntN(13000)) * time.Millisecond
}

// target picks the node a fault hits: the Raft leader a third of the
// time (the fault that matters most), otherwise any node.
func (m *nemesis) target() *composeNode {
	if m.rng.IntN(3) == 0 {
		return m.c.WaitLeader(30 * time.Second)
	}
	return m.c.Nodes[m.rng.IntN(len(m.c.Nodes))]
}

// next injects the next fault, holds it, heals it and waits until the
// cluster serves again.
func (m *nemesis) next() {
	if len(m.round) == 0 {
		m.round = append([]faultKind(nil), faultKinds...)
		m.rng.Shuffle(len(m.round), func(i, j int) { m.round[i], m.round[j] = m.round[j], m.round[i] })
	}
	kind := m.round[0]
	m.round = m.round[1:]
	m.total++
	m.counts[kind]++
	m.c.note("fault %d: %s", m.total, kind)
	switch kind {
	case faultKill:
		n := m.target()
		end := m.c.discount(faultGraceAnswer, n)
		m.c.Kill(n)
		m.w.run(m.hold())
		m.c.Start(n)
		m.c.waitNode(n, 60*time.Second)
		end()
	case faultPause:
		n := m.target()
		end := m.c.discount(faultGraceAnswer, n)
		m.c.Pause(n)
		m.w.run(m.hold())
		m.c.Unpause(n)
		end()
	case faultPartition:
		n := m.target()
		iface := m.c.clusterIface(n)
		rules := [][]string{{"INPUT", "-i", iface, "-j", "DROP"}, {"OUTPUT", "-o", iface, "-j", "DROP"}}
		m.withRules(n, []*composeNode{n}, rules, fmt.Sprintf("%s cut off from its peers (drops everything on %s)", n.Name, iface))
	case faultAsymmetric:
		a := m.target()
		var others []*composeNode
		for _, o := range m.c.Nodes {
			if o != a {
				others = append(others, o)
			}
		}
		b := others[m.rng.IntN(len(others))]
		rules := [][]string{{"INPUT", "-s", m.c.clusterIP(b), "-j", "DROP"}}
		m.withRules(a, []*composeNode{a, b}, rules, fmt.Sprintf("%s drops the packets of %s; %s still reaches %s", a.Name, b.Name, a.Name, b.Name))
	case faultLoss:
		n := m.target()
		iface := m.c.clusterIface(n)
		p := strconv.FormatFloat(0.1+0.4*m.rng.Float64(), 'f', 2, 64)
		stat := []string{"-m", "statistic", "--mode", "random", "--probability", p, "-j", "DROP"}
		rules := [][]string{append([]string{"INPUT", "-i", iface}, stat...), append([]string{"OUTPUT", "-o", iface}, stat...)}
		m.withRules(n, []*composeNode{n}, rules, fmt.Sprintf("%s loses %s of its packets on %s, both ways", n.Name, p, iface))
	case faultSlow:
		n := m.target()
		iface := m.c.clusterIface(n)
		rate := []string{"64kbit", "256kbit", "1mbit"}[m.rng.IntN(3)]
		end := m.c.discount(faultGraceAnswer, n)
		m.c.nsenter(n, "tc", "qdisc", "add", "dev", iface, "root", "tbf", "rate", rate, "burst", "16kbit", "latency", "400ms")
		m.c.note("%s sends at most %s on %s (tc tbf)", n.Name, rate, iface)
		m.w.run(m.hold())
		m.c.nsenter(n, "tc", "qdisc", "del", "dev", iface, "root")
		m.c.note("%s: rate limit removed", n.Name)
		end()
	case faultRolling:
		order := append(m.c.Followers(), m.c.WaitLeader(30*time.Second))
		order = append(order, m.c.Proxies()...)
		for _, n := range order {
			end := m.c.discount(faultGraceAnswer, n)
			m.c.Restart(n)
			m.c.waitNode(n, 60*time.Second)
			end()
			l := m.c.WaitLeader(30 * time.Second)
			m.c.note("%s serves again; raft leader %s", n.Name, l.Name)
			m.w.run(time.Second)
		}
	}
	start := time.Now()
	m.c.waitServing(90 * time.Second)
	m.c.note("healed: the cluster serves again after %v", time.Since(start).Round(10*time.Millisecond))
}

// withRules adds iptables rules in n's network namespace, holds them,
// and removes them; hit are the nodes whose answers meanwhile do not count.
func (m *nemesis) withRules(n *composeNode, hit []*composeNode, rules [][]string, what string) {
	end := m.c.discount(faultGraceAnswer, hit...)
	for _, r := range rules {
		m.c.nsenter(n, append([]string{"iptables", "-I"}, r...)...)
	}
	m.c.note("%s", what)
	m.w.run(m.hold())
	for _, r := range rules {
		m.c.nsenter(n, append([]string{"iptables", "-D"}, r...)...)
	}
	m.c.note("%s: rules removed", n.Name)
	end()
}

// run runs a host command and fails the test if it fails.
func (c *composeCluster) run(name string, args ...string) string {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		c.t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// nsenter runs a host command in the network namespace of n's container.
func (c *composeCluster) nsenter(n *composeNode, args ...string) string {
	c.t.Helper()
	pid := strings.TrimSpace(c.run("docker", "inspect", "-f", "{{.State.Pid}}", n.id))
	if pid == "" || pid == "0" {
		c.t.Fatalf("%s has no process (pid %q)", n.Name, pid)
	}
	return c.run("nsenter", append([]string{"-t", pid, "-n"}, args...)...)
}

// clusterIP is n's address on the cluster network.
func (c *composeCluster) clusterIP(n *composeNode) string {
	c.t.Helper()
	ip := strings.TrimSpace(c.run("docker", "inspect", "-f",
		fmt.Sprintf(`{{(index .NetworkSettings.Networks %q).IPAddress}}`, c.clusterNetwork()), n.id))
	if ip == "" {
		c.t.Fatalf("%s has no address on %s", n.Name, c.clusterNetwork())
	}
	return ip
}

// clusterIface is the name of n's interface on the cluster network, as
// seen in its network namespace.
func (c *composeCluster) clusterIface(n *composeNode) string {
	c.t.Helper()
	ip := c.clusterIP(n)
	for _, line := range strings.Split(c.nsenter(n, "ip", "-o", "-4", "addr", "show"), "\n") {
		// 27: eth1    inet 172.20.0.3/16 brd ... scope global eth1
		f := strings.Fields(line)
		if len(f) >= 4 && f[2] == "inet" && strings.HasPrefix(f[3], ip+"/") {
			return strings.SplitN(f[1], "@", 2)[0]
		}
	}
	c.t.Fatalf("%s: no interface holds %s", n.Name, ip)
	return ""
}
