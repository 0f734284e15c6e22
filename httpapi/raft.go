package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"

	"github.com/discoverd/discoverd/api"
	"github.com/discoverd/discoverd/auth"
)

// Cluster is what the membership routes need of a node (*node.Node
// implements it). The API registers them only when its Backend is one.
type Cluster interface {
	// ApplyForwarded applies an encoded command a follower forwarded; an
	// empty command is a read barrier answered with the leader's index.
	ApplyForwarded(ctx context.Context, cmd []byte) (*api.AppliedCommand, error)
	// ApplyForwardedBatch applies several encoded commands a follower
	// forwarded in one body, answering each on its own.
	ApplyForwardedBatch(ctx context.Context, body []byte) ([]api.AppliedResult, error)
	Nodes() ([]api.NodeInfo, error)
	// WaitRaftLeader is the Raft leader's address, waiting a while (the
	// node's leader wait) when none is known; "" when none came.
	WaitRaftLeader(ctx context.Context) string
	RaftPeers() []string
	AddPeer(ctx context.Context, addr string) error
	RemovePeer(ctx context.Context, addr string) error
	Promote(ctx context.Context) error
	Demote(ctx context.Context) error
	// SaveSnapshot takes a backup of the registry, written out in the
	// snapshot file format by WriteTo.
	SaveSnapshot(ctx context.Context) (io.WriterTo, error)
	// RestoreSnapshot replaces the cluster's registry with a snapshot file
	// and returns the Raft index it was restored at.
	RestoreSnapshot(ctx context.Context, r io.Reader) (uint64, error)
}

// snapshotPath is the backup route, whose bodies may be far larger than
// any other request's (snapshot.MaxBytes).
const snapshotPath = "/raft/snapshot"

// route is one entry of the route table. perm is what a caller needs when
// auth is on; a route without one is refused when the table is built.
type route struct {
	method, path string
	perm         auth.Perm
	fn           http.HandlerFunc
}

func (h *handler) clusterRoutes(c Cluster) []route {
	return []route{
		{"POST", "/raft/apply", auth.PermNode, func(w http.ResponseWriter, r *http.Request) { h.applyForwarded(c, w, r) }},
		{"POST", "/raft/apply-batch", auth.PermNode, func(w http.ResponseWriter, r *http.Request) { h.applyForwardedBatch(c, w, r) }},
		{"GET", "/raft/nodes", auth.PermRead, func(w http.ResponseWriter, r *http.Request) {
			nodes, err := c.Nodes()
			h.answer(w, nodes, err)
		}},
		{"GET", "/raft/leader", auth.PermRead, func(w http.ResponseWriter, r *http.Request) {
			leader := c.WaitRaftLeader(r.Context())
			if leader == "" {
				h.fail(w, api.Errorf(api.CodeUnavailable, "no raft leader is known to this node"))
				return
			}
			h.answer(w, api.LeaderInfo{Host: leader}, nil)
		}},
		{"GET", "/raft/peers", auth.PermRead, func(w http.ResponseWriter, r *http.Request) {
			peers := c.RaftPeers()
			if peers == nil {
				peers = []string{}
			}
			h.answer(w, peers, nil)
		}},
		{"PUT", "/raft/peers/{addr}", auth.PermAdmin, func(w http.ResponseWriter, r *http.Request) {
			h.answer(w, nil, c.AddPeer(r.Context(), r.PathValue("addr")))
		}},
		{"DELETE", "/raft/peers/{addr}", auth.PermAdmin, func(w http.ResponseWriter, r *http.Request) {
			h.answer(w, nil, c.RemovePeer(r.Context(), r.PathValue("addr")))
		}},
		{"POST", "/raft/promote", auth.PermAdmin, func(w http.ResponseWriter, r *http.Request) {
			h.answer(w, nil, c.Promote(r.Context()))
		}},
		{"POST", "/raft/demote", auth.PermAdmin, func(w http.ResponseWriter, r *http.Request) {
			h.answer(w, nil, c.Demote(r.Context()))
		}},
		{"GET", snapshotPath, auth.PermAdmin, func(w http.ResponseWriter, r *http.Request) { h.saveSnapshot(c, w, r) }},
		{"PUT", snapshotPath, auth.PermAdmin, func(w http.ResponseWriter, r *http.Request) { h.restoreSnapshot(c, w, r) }},
	}
}

// GET /raft/snapshot: a backup of the registry, streamed as it is written.
// An error after the first byte can only cut the stream short, which the
// file's missing checksum line then shows.
func (h *handler) saveSnapshot(c Cluster, w http.ResponseWriter, r *http.Request) {
	snap, err := c.SaveSnapshot(r.Context())
	if err != nil {
		h.fail(w, err)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Disposition", `attachment; filename="discoverd.snap"`)
	w.WriteHeader(http.StatusOK)
	if _, err := snap.WriteTo(w); err != nil {
		h.log.Warn().Err(err).Msg("streaming a snapshot")
	}
}

// PUT /raft/snapshot: restore a backup into the cluster.
func (h *handler) restoreSnapshot(c Cluster, w http.ResponseWriter, r *http.Request) {
	idx, err := c.RestoreSnapshot(r.Context(), r.Body)
	if err != nil {
		h.writeError(w, err, 0)
		return
	}
	h.setIndex(w, idx)
	h.answer(w, api.AppliedCommand{Index: idx}, nil)
}

// answer writes v as JSON (or an empty 200 when v is nil), or the error.
func (h *handler) answer(w http.ResponseWriter, v any, err error) {
	if err != nil {
		h.fail(w, err)
		return
	}
	if v == nil {
		w.WriteHeader(http.StatusOK)
		return
	}
	b, err := json.Marshal(v)
	if err != nil {
		h.fail(w, err)
		return
	}
	writeBody(w, http.StatusOK, append(b, '\n'))
}

// POST /raft/apply: a write forwarded by a follower.
func (h *handler) applyForwarded(c Cluster, w http.ResponseWriter, r *http.Request) {
	cmd, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBodyBytes))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			h.failBody(w, errBodyTooLarge(-1))
			return
		}
		h.fail(w, api.Errorf(api.CodeValidation, "reading the forwarded command: %v", err))
		return
	}
	res, err := c.ApplyForwarded(r.Context(), cmd)
	if err != nil {
		idx := uint64(0)
		if res != nil {
			idx = res.Index
		}
		h.writeError(w, err, idx)
		return
	}
	h.setIndex(w, res.Index)
	h.answer(w, res, nil)
}
