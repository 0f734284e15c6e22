package api

import "context"

// ServiceSummaryKind names what a ServiceSummary reports.
type ServiceSummaryKind string

const (
	// SummaryService is a service's current instance count and leader: sent
	// for every service when a stream opens, then whenever either changes.
	SummaryService ServiceSummaryKind = "service"
	// SummaryRemoved says the service no longer exists.
	SummaryRemoved ServiceSummaryKind = "removed"
	// SummaryCurrent ends the opening list: every service that exists was
	// sent before it, so a reader drops any it holds that was not.
	SummaryCurrent ServiceSummaryKind = "current"
)

// ServiceSummary is one event of the stream of the service list (GET
// /services with Accept: text/event-stream): a service with its instance
// count and leader, as of the applied index Index.
type ServiceSummary struct {
	Kind      ServiceSummaryKind `json:"kind"`
	Service   string             `json:"service,omitempty"`
	Instances int                `json:"instances"`
	Leader    *Instance          `json:"leader,omitempty"`
	Index     uint64             `json:"index"`
}

// ServiceWatch is an open stream of the service list, as a server node hands
// it to a transport.
type ServiceWatch interface {
	// Next blocks until the list changed since the last call and returns the
	// changes: the first call returns every service, then a SummaryCurrent.
	// It returns ctx's error when ctx ends first, or an error saying why the
	// stream cannot go on (the node stopping, or losing its registry).
	Next(ctx context.Context) ([]ServiceSummary, error)
}
