// Package connlimit bounds how many HTTP connections and streams one client
// address may hold on a node (--max-conns-per-client), so that one careless
// or hostile client cannot take a node's memory and file descriptors.
//
// A connection holds one slot for as long as it is open, and as many slots
// as it has requests in flight when that is more than one (HTTP/2 streams),
// so HTTP/2 is no way around the limit. A request past the limit is answered
// 429 with the api.Error code too_many_connections (retry: true); a
// connection opened past the limit answers its first request so and closes.
//
// Node-to-node requests (a follower forwarding a write, a proxy relaying a
// client's request or stream, membership calls) are never counted: Raft
// connections never reach this package (the node's port mux hands them to
// Raft by their first byte), and every HTTP request a node sends another
// carries the Discoverd-Forwarded (or, relayed for a proxy's client,
// Discoverd-Relayed) header. A connection that carries one gives its slots
// back. Over TLS the header counts only with a client certificate verified
// against the cluster's CA, as every node presents; Config.IsNode can
// replace that test.
//
// The Limiter is a Prometheus collector of its refusals and held slots.
//
// It may import the standard library, api and client_golang's prometheus.
package connlimit
