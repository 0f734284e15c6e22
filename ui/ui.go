package ui

import (
	"context"
	"embed"
	"encoding/json"
	"io"
	"io/fs"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/discoverd/discoverd/api"
)

//go:embed static
var static embed.FS

// Prefix is the path the page's files are served under.
const Prefix = "/ui/"

// ClusterPath is the page's view of the cluster's nodes (JSON).
const ClusterPath = Prefix + "cluster"

// Backend is what the cluster view needs of the node serving the page.
type Backend interface {
	// Status describes this node, as GET /.well-known/status does.
	Status() api.Status
	// RaftLeader is the Raft leader's address, "" when none is known.
	RaftLeader() string
	// RaftPeers lists the voters (on a proxy: the voters it knows).
	RaftPeers() []string
}

// nodeLister is implemented by a voter, which holds every node's
// announcement (proxies included) in its replicated state.
type nodeLister interface {
	Nodes() ([]api.NodeInfo, error)
}

// probeTimeout bounds the status request to each other node: a node that
// does not answer in time is shown as not answering.
const probeTimeout = 2 * time.Second

// Page serves the web page: its files, which hold no data, and the cluster
// view, which is a read of the registry's nodes. They are two routes so
// that each can have its own permission.
type Page struct {
	b      Backend
	files  http.Handler
	client *http.Client
}

// New returns the page of the node b.
func New(b Backend) *Page {
	sub, err := fs.Sub(static, "static")
	if err != nil {
		panic(err) // the embedded tree is fixed at build time
	}
	return &Page{
		b:     b,
		files: http.StripPrefix(Prefix, http.FileServer(http.FS(sub))),
		client: &http.Client{
			Timeout: probeTimeout,
			// The probes go to other nodes of this cluster: no proxy from
			// the environment stands between them.
			Transport: &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 2, IdleConnTimeout: time.Minute},
		},
	}
}

func securityHeaders(hdr http.Header) {
	// Nothing but this node: no inline script, no other origin.
	hdr.Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'")
	hdr.Set("X-Content-Type-Options", "nosniff")
	hdr.Set("Referrer-Policy", "no-referrer")
}

// Files serves GET /ui/ and the files under it.
func (p *Page) Files(w http.ResponseWriter, r *http.Request) {
	securityHeaders(w.Header())
	// The files change with the binary: a browser revalidates them rather
	// than run an old page against an upgraded node.
	w.Header().Set("Cache-Control", "no-cache")
	p.files.ServeHTTP(w, r)
}

// ClusterNode is one node of GET /ui/cluster.
type ClusterNode struct {
	Addr string `json:"addr"`
	// Role is the node's own word when it answered (leader, follower,
	// candidate, proxy), else "voter" or "proxy" from the membership.
	Role string `json:"role"`
	Self bool   `json:"self,omitempty"`
	// Answers says whether the node answered its status request.
	Answers bool `json:"answers"`
	// Status is the node's GET /.well-known/status body as it sent it, so
	// fields added to it later (a version) reach the page unchanged.
	Status json.RawMessage `json:"status,omitempty"`
	Error  string          `json:"error,omitempty"`
}

// ClusterView is the body of GET /ui/cluster.
type ClusterView struct {
	Leader string        `json:"leader"`
	Nodes  []ClusterNode `json:"nodes"`
}

// Cluster serves GET /ui/cluster: every node this one knows of (itself, the
// voters, the nodes announced in the registry), each with the status it
// answered, asked in parallel.
func (p *Page) Cluster(w http.ResponseWriter, r *http.Request) {
	securityHeaders(w.Header())
	view := p.clusterView(r)
	b, err := json.Marshal(view)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write(append(b, '\n'))
}

func (p *Page) clusterView(r *http.Request) ClusterView {
	self := p.b.Status()
	view := ClusterView{Leader: p.b.RaftLeader()}
	voters := p.b.RaftPeers()
	addrs := append([]string{self.Addr}, voters...)
	if nl, ok := p.b.(nodeLister); ok {
		if infos, err := nl.Nodes(); err == nil {
			for _, ni := range infos {
				addrs = append(addrs, ni.Addr)
			}
		}
	}
	slices.Sort(addrs)
	addrs = slices.Compact(addrs)

	view.Nodes = make([]ClusterNode, len(addrs))
	var wg sync.WaitGroup
	for i, addr := range addrs {
		n := &view.Nodes[i]
		n.Addr = addr
		n.Role = "proxy"
		if slices.Contains(voters, addr) {
			n.Role = "voter"
		}
		if addr == self.Addr {
			n.Self, n.Answers, n.Role = true, true, self.Role
			n.Status, _ = json.Marshal(self)
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			p.probe(r, n)
		}()
	}
	wg.Wait()
	return view
}

// probe asks one node for its status, with the caller's credentials (a
// status read is a read like any other once auth is on).
func (p *Page) probe(r *http.Request, n *ClusterNode) {
	ctx, cancel := context.WithTimeout(r.Context(), probeTimeout)
	defer cancel()
	scheme := "http://"
	if r.TLS != nil {
		scheme = "https://"
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, scheme+n.Addr+"/.well-known/status", nil)
	if err != nil {
		n.Error = err.Error()
		return
	}
	if auth := r.Header.Get("Authorization"); auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := p.client.Do(req)
	if err != nil {
		n.Error = shortError(err)
		return
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil || resp.StatusCode != http.StatusOK || !json.Valid(body) {
		n.Error = "answered " + resp.Status
		return
	}
	n.Answers = true
	n.Status = json.RawMessage(body)
	var st struct {
		Role string `json:"role"`
	}
	if json.Unmarshal(body, &st) == nil && st.Role != "" {
		n.Role = st.Role
	}
}

// shortError drops the request's method and URL that net/http puts before
// the reason, which the page already shows as the node's address.
func shortError(err error) string {
	s := err.Error()
	if i := strings.LastIndex(s, ": "); i >= 0 {
		return s[i+2:]
	}
	return s
}
