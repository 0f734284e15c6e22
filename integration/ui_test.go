package integration

import (
	"testing"
	"time"

	"github.com/discoverd/discoverd/api"
	"github.com/discoverd/discoverd/internal/browsertest"
)

// TestBrowserThroughProxy opens the web page on a proxy of a 3-voter
// cluster: the proxy serves the page itself and forwards its API calls and
// streams, the page follows changes written to other nodes, and its cluster
// view shows every node with its role and whether it answers.
func TestBrowserThroughProxy(t *testing.T) {
	c := NewCluster(t, 3, 1, WithTTL(10*time.Minute, time.Second))
	leader := c.WaitForLeader(10 * time.Second)
	proxy := c.Proxies()[0]
	mustDo(t, "PUT", leader.URL()+"/services/web", nil)
	mustDo(t, "PUT", proxy.URL()+"/services/web/instances/web-1", api.Instance{Addr: "10.0.0.1:80", Proto: "http"})

	b := browsertest.New(t, 1400, 900)
	b.Navigate(proxy.URL() + "/ui/")
	b.WaitFor("web in the service list", `document.querySelector('#services-body tr[data-service="web"]')`, 0)
	b.Click(`#services-body tr[data-service="web"] a`)
	b.WaitFor("web-1 marked as the leader", `document.querySelector('#instances-body tr.leader[data-id="web-1"]')`, 0)

	// A registration written to a follower reaches the page through the
	// proxy's forwarded stream.
	follower := c.Followers()[0]
	mustDo(t, "PUT", follower.URL()+"/services/web/instances/web-2", api.Instance{Addr: "10.0.0.2:80", Proto: "http"})
	b.WaitFor("web-2 to appear", `document.querySelector('#instances-body tr[data-id="web-2"]')`, 0)
	mustDo(t, "DELETE", leader.URL()+"/services/web/instances/web-1", nil)
	b.WaitFor("the leader mark to move to web-2", `document.querySelector('#instances-body tr.leader[data-id="web-2"]') && !document.querySelector('#instances-body tr[data-id="web-1"]')`, 0)

	// The cluster view: one leader, two followers, this proxy, all answering.
	b.Click("#nav-cluster")
	cell := func(addr string) string {
		return `document.querySelector('#cluster-body tr[data-addr=` + browsertest.Quote(addr) + `]')`
	}
	// The leader may have moved since the start on a busy machine: the
	// roles are counted, not pinned to addresses.
	b.WaitFor("every node with its role", `(() => {
		const rows = [...document.querySelectorAll('#cluster-body tr')];
		const role = (r) => r.cells[1].textContent;
		return rows.length === 4 &&
			rows.filter(r => role(r) === 'leader').length === 1 &&
			rows.filter(r => role(r) === 'follower').length === 2 &&
			rows.every(r => r.cells[3].textContent.startsWith('yes')) &&
			`+cell(proxy.Addr)+` && role(`+cell(proxy.Addr)+`) === 'proxy' && `+cell(proxy.Addr)+`.innerText.includes('this node');
	})()`, 0)
	b.Screenshot("screenshots", "cluster.png")

	// A follower that stops is shown as not answering.
	var stopped *Node
	for _, nd := range c.Followers() {
		stopped = nd
		break
	}
	c.Kill(stopped.Index)
	b.WaitFor("the stopped follower not answering", cell(stopped.Addr)+` && `+cell(stopped.Addr)+`.cells[3].textContent.startsWith('no')`, 0)
	b.Screenshot("screenshots", "cluster-node-down.png")
	b.NoConsoleErrors()
}
