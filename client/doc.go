// Package client is the Go client of discoverd: it registers instances and
// keeps them alive (Heartbeater), reads and writes services, leaders and
// service meta, and watches a service's events (Watcher, Leaders) with
// reconnection and reconciliation, so that a watcher's view always converges
// to the server's after a server restart or failover. With WithCheck
// (HTTPCheck, TCPCheck or a CheckFunc) an instance is registered only while
// its health check passes, and the Heartbeater reports the check's state.
//
// It talks to discoverd over its HTTP API (JSON and Server-Sent Events) and,
// with WithNATS, over NATS for heartbeats and event subscriptions. A Client
// is given one or more servers and fails over across them: requests that fail
// with a connection error or a retryable api.Error (service_unavailable) are
// retried on the next server, with a short, jittered, capped backoff, until
// the call's context ends.
//
// Errors are *api.Error values (see api.IsCode, IsNotFound, IsUnavailable):
// the server's JSON error bodies decoded, client-side validation errors, and
// service_unavailable (retryable) for servers that could not be reached.
// The one exception is a call whose context ends first: its error wraps
// ctx.Err() (so errors.Is(err, context.DeadlineExceeded) holds) and quotes
// the last server error. The shared JSON types and header names come from
// package api.
//
// Everything takes a context.Context. A call's retries are bounded by its
// context's deadline or, without one, by the client's retry timeout
// (WithRetryTimeout, 15s by default). Writes retried after a connection
// error may have been applied by an earlier attempt: a retried AddService
// may then fail with object_exists, a retried SetMeta with
// precondition_failed.
//
// The package imports only api, the standard library and nats.go: never a
// server package.
package client
