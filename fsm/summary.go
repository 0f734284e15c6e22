package fsm

import (
	"sort"

	"github.com/discoverd/discoverd/api"
)

// ServiceSummaries returns every service with its instance count and leader,
// sorted by name, read at one point of the log, with the applied index of
// that point. It costs one step per service, not per instance.
func (f *FSM) ServiceSummaries() ([]api.ServiceSummary, uint64) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	out := make([]api.ServiceSummary, 0, len(f.services))
	for name, s := range f.services {
		out = append(out, api.ServiceSummary{Kind: api.SummaryService, Service: name, Instances: s.len(), Leader: s.leader(), Index: f.applied})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Service < out[j].Service })
	return out, f.applied
}
