// Package client is the Go client of discoverd: it registers instances and
// keeps them alive (Heartbeater), reads and writes services, leaders and
// service meta, and watches a service's events (Watcher, Leaders) with
// reconnection and reconciliation, so that a watcher's view always converges
// to the server's after a server restart or failover.
//
// It talks to discoverd over its HTTP API (JSON and Server-Sent Events) and,
// with WithNATS, over NATS for heartbeats and event subscriptions. A Client
// is given one or more servers and fails over across them: requests that fail
// with a connection error or a retryable api.Error (service_unavailable) are
// retried on the next server, with a short, jittered, capped backoff, until
// the call's context ends.
//
// Errors from the server are *api.Error values (see api.IsCode and
// IsNotFound); the shared JSON types and header names come from package api.
//
// The package imports only api, the standard library and nats.go: never a
// server package.
package client
