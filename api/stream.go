package api

// Stream is an open subscription to a service's events, as a server node
// hands it to a transport.
type Stream interface {
	// Events yields the events; it is closed when the stream ends.
	Events() <-chan Event
	// Err says why the stream ended: nil after Close, otherwise an error such
	// as the subscriber having fallen too far behind or the node shutting down.
	Err() error
	// Close ends the stream and releases it.
	Close()
}
