// Package node runs one discoverd process: Raft (hashicorp/raft with a
// raft-boltdb/v2 store and file snapshots) over the state machine of package
// fsm, the port shared by HTTP and Raft, the in-memory heartbeat table and the
// leader's expirer, the fan-out of applied events to subscribers, and the
// node's Prometheus registry (metrics.go), read at scrape time from the state
// above so that no hot path pays for it.
//
// Transports (httpapi, bus) call one Node method per operation. This package
// may import the standard library, api, fsm, bus, hashicorp/raft (with
// go-hclog for its logger), raft-boltdb/v2 and bbolt, nats.go (the node's
// in-process connection to its NATS server), zerolog, and client_golang's
// prometheus and collectors packages; it never imports a transport (the
// HTTP encoding of the metrics is httpapi's).
package node
