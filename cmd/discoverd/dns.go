package main

import (
	"fmt"
	"math"
	"net"
	"strings"

	"github.com/miekg/dns"
	"github.com/rs/zerolog"

	"github.com/discoverd/discoverd/dnsapi"
	"github.com/discoverd/discoverd/node"
)

// dnsOptions checks the --dns-* flags.
func (o *options) dnsOptions(log zerolog.Logger) (dnsapi.Options, error) {
	opts := dnsapi.Options{Log: log}
	if o.dnsAddr != "" {
		if _, _, err := net.SplitHostPort(o.dnsAddr); err != nil {
			return opts, fmt.Errorf("--dns-addr %q: want host:port", o.dnsAddr)
		}
	}
	domain := strings.TrimSpace(o.dnsDomain)
	if domain == "" || domain == "." {
		return opts, fmt.Errorf("--dns-domain %q: want a domain such as discoverd.", o.dnsDomain)
	}
	if _, ok := dns.IsDomainName(domain); !ok {
		return opts, fmt.Errorf("--dns-domain %q is not a domain name", o.dnsDomain)
	}
	opts.Domain = dns.Fqdn(domain)
	for _, r := range strings.Split(o.dnsRecursors, ",") {
		if r = strings.TrimSpace(r); r == "" {
			continue
		}
		if _, _, err := net.SplitHostPort(r); err != nil {
			return opts, fmt.Errorf("--dns-recursors: %q is not host:port", r)
		}
		opts.Recursors = append(opts.Recursors, r)
	}
	if o.dnsTTL > math.MaxInt32 {
		return opts, fmt.Errorf("--dns-ttl %d: at most %d seconds", o.dnsTTL, math.MaxInt32)
	}
	opts.TTL = uint32(o.dnsTTL)
	return opts, nil
}

// startDNS serves DNS on addr (nothing when it is empty) from the node's
// local state on a voter and through a voter on a proxy, and adds the DNS
// counters to the node's metrics.
func startDNS(addr string, opts dnsapi.Options, n *node.Node, peer dnsapi.PeerAuth) (*dnsapi.Server, error) {
	if addr == "" {
		return nil, nil
	}
	h := dnsapi.NewHandler(dnsapi.ByRole(n.IsProxy, n, dnsapi.ThroughVoters(n.Voters, peer)), opts)
	if err := n.RegisterMetrics(h.Metrics().Collectors()...); err != nil {
		return nil, fmt.Errorf("DNS metrics: %w", err)
	}
	s, err := dnsapi.Listen(addr, h)
	if err != nil {
		return nil, fmt.Errorf("--dns-addr %s: %w", addr, err)
	}
	opts.Log.Info().Str("dns_addr", s.Addr()).Str("domain", h.Domain()).Msg("DNS server started")
	return s, nil
}
