// Package testnode runs a real single-node discoverd in process for tests:
// a node.Node that leads a cluster of its own, with its HTTP API, on
// loopback. The tests of the client, discoverctl and the benchmark harness
// start one each rather than mocking the server, so that they check the
// real answers. Multi-node clusters are package integration's.
//
// Only tests import it. It may import the standard library, node, httpapi
// and zerolog.
package testnode
