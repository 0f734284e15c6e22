//go:build pprof

package main

import (
	"net/http"
	_ "net/http/pprof"
	"os"
)

// A build with -tags pprof serves net/http/pprof on $DISCOVERD_PPROF_ADDR
// (default 127.0.0.1:6060), apart from the API, for the heap profiles in
// BENCHMARKS.md. Release builds leave it out.
func init() {
	addr := os.Getenv("DISCOVERD_PPROF_ADDR")
	if addr == "" {
		addr = "127.0.0.1:6060"
	}
	go http.ListenAndServe(addr, nil)
}
