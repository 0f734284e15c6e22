// Package node runs one discoverd process: Raft (hashicorp/raft with a
// raft-boltdb/v2 store and file snapshots) over the state machine of package
// fsm, the port shared by HTTP and Raft, the in-memory heartbeat table and the
// leader's expirer, and the fan-out of applied events to subscribers.
//
// Transports (httpapi, bus) call one Node method per operation. This package
// may import the standard library, api, fsm, bus, hashicorp/raft and zerolog;
// it never imports a transport.
package node
