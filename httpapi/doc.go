// Package httpapi is discoverd's HTTP API: the Flynn-compatible JSON routes
// and the Server-Sent Event streams, served over a node's Go interface
// (Backend). It holds no state of its own: every route validates its input,
// calls one Backend method and encodes the answer.
//
// Every response carries the node's applied Raft index in the
// Discoverd-Index header, and every error is an api.Error JSON body, never a
// plain-text one: bad input is a 4xx, never a 500 or a panic.
//
// GET /metrics serves the Backend's Prometheus registry with promhttp; a
// proxy answers it itself, as it does /ping and /.well-known/status.
//
// GET /ui/ is the web page of package ui, mounted in the route table; GET /
// sends a browser there.
//
// With Options.Auth, every route needs the permission declared for it in
// the route table (guard.go); GET /ping stays open.
//
// It may import the standard library, packages api, auth, connlimit (to keep
// a detached stream's slot), h2server (its HTTP/2 connections) and ui,
// zerolog, and client_golang's prometheus (the registry's type) and
// promhttp (its exposition over HTTP).
package httpapi
