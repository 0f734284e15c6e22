// Package integration holds discoverd's multi-node tests: in-process
// clusters of real nodes on loopback (Cluster), and the fault tests that
// drive the docker-compose cluster. It may import every package.
package integration
