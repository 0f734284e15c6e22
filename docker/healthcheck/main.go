// Command healthcheck is the health probe of the discoverd container image.
//
// The image is FROM scratch: it has no shell and no curl, so the compose
// health check runs this static program instead. It sends GET /ping (or the
// path given as its argument) to the discoverd in the same container, on the
// port of DISCOVERD_ADDR (default 127.0.0.1:1111), and exits 0 on a 2xx
// answer, 1 otherwise.
//
// With DISCOVERD_TLS_CA set (a node with --tls-ca), it speaks HTTPS and
// verifies the node against that CA (node certificates made by discoverctl
// are valid for 127.0.0.1). Both paths are open without a token.
//
// With the path /.well-known/status it also requires the answer's "healthy"
// to be true (the node knows a Raft leader): scripts/cluster.sh uses it to
// wait until the cluster serves, as /ping only says the process answers.
package main

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"time"
)

func main() {
	path := "/ping"
	if len(os.Args) > 1 {
		path = os.Args[1]
	}
	addr := os.Getenv("DISCOVERD_ADDR")
	if addr == "" {
		addr = "127.0.0.1:1111"
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		fmt.Fprintf(os.Stderr, "healthcheck: DISCOVERD_ADDR=%q is not host:port\n", addr)
		os.Exit(1)
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1" // bound on every interface: ask over loopback
	}
	c := &http.Client{Timeout: 2 * time.Second}
	scheme := "http://"
	if ca := os.Getenv("DISCOVERD_TLS_CA"); ca != "" {
		pem, err := os.ReadFile(ca)
		pool := x509.NewCertPool()
		if err != nil || !pool.AppendCertsFromPEM(pem) {
			fmt.Fprintf(os.Stderr, "healthcheck: DISCOVERD_TLS_CA=%q: no CA certificate (%v)\n", ca, err)
			os.Exit(1)
		}
		c.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}
		scheme = "https://"
	}
	resp, err := c.Get(scheme + net.JoinHostPort(host, port) + path)
	if err != nil {
		fmt.Fprintln(os.Stderr, "healthcheck:", err)
		os.Exit(1)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		fmt.Fprintf(os.Stderr, "healthcheck: GET %s answered %s\n", path, resp.Status)
		os.Exit(1)
	}
	if path == "/.well-known/status" {
		var st struct {
			Healthy bool   `json:"healthy"`
			Role    string `json:"role"`
			Leader  string `json:"leader"`
		}
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		if err := json.Unmarshal(b, &st); err != nil || !st.Healthy {
			fmt.Fprintf(os.Stderr, "healthcheck: not healthy: %s\n", b)
			os.Exit(1)
		}
		fmt.Printf("%s, leader %s\n", st.Role, st.Leader)
	}
}
