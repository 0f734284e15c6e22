// Command discoverctl is the command-line tool of discoverd: it lists
// services, instances and leaders, registers an instance and keeps it alive
// (with --check-http or --check-tcp, only while that health check passes),
// streams a service's events, reads and writes service meta, and shows the
// cluster's peers and a server's status.
//
// Output is a table for people, or JSON with --json for scripts. The server
// is --server (a comma-separated list to fail over across), else the
// DISCOVERD environment variable, else 127.0.0.1:1111. On failure it prints
// one line "discoverctl: <message>" to stderr and exits non-zero (1, or 2
// for a usage error). A service that exists but has nothing to show (no
// leader, no meta, no instances) is an answer, not a failure: exit 0, with
// null (or []) for --json.
package main

import "os"

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}
