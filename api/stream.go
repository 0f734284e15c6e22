package api

// Stream is an open subscription to a service's events, as a server node
// hands it to a transport.
//
// A stream holds no buffer while it is idle: events wait in a queue that
// grows only while some are waiting, so that a node can hold a great many
// idle streams cheaply.
type Stream interface {
	// Ready is signalled when events are waiting or the stream has ended;
	// then Take.
	Ready() <-chan struct{}
	// Take appends the waiting events to dst, in log order, and reports
	// whether the stream is still open. Once it reports false, every event
	// was taken and none follows.
	Take(dst []Event) ([]Event, bool)
	// Err says why the stream ended: nil after Close, otherwise an error such
	// as the subscriber having fallen too far behind or the node shutting down.
	Err() error
	// Close ends the stream and releases it.
	Close()
}
