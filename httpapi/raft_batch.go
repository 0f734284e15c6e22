package httpapi

import (
	"errors"
	"io"
	"net/http"

	"github.com/discoverd/discoverd/api"
)

// POST /raft/apply-batch: writes a follower forwarded together. The answer
// is 200 with one result per write, each with its own index or error,
// unless the batch as a whole cannot be applied here (not the leader, a
// malformed body).
func (h *handler) applyForwardedBatch(c Cluster, w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBodyBytes))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			h.failBody(w, errBodyTooLarge(-1))
			return
		}
		h.fail(w, api.Errorf(api.CodeValidation, "reading the forwarded commands: %v", err))
		return
	}
	results, err := c.ApplyForwardedBatch(r.Context(), body)
	if err != nil {
		h.fail(w, err)
		return
	}
	var idx uint64
	for i := range results {
		idx = max(idx, results[i].Index)
	}
	h.setIndex(w, idx)
	h.answer(w, results, nil)
}
