// Package dnsapi is discoverd's DNS interface: it answers Flynn discoverd's
// names ({service}.discoverd., _{service}._{proto}.discoverd.,
// leader.{service}.discoverd., {id}.{service}._i.discoverd. and the zone's
// SOA) over UDP and TCP with github.com/miekg/dns, and passes other names to
// upstream recursors when it has any.
//
// It is a transport like httpapi: it reads the registry through the small
// Backend interface (one call per lookup), from the node's local state, and
// never waits on Raft. A proxy, which holds no registry, reads through a
// voter over the HTTP API (ThroughVoters), as the proxy's HTTP reads do.
//
// It may import the standard library, api, miekg/dns, prometheus and
// zerolog; never node or httpapi (cmd/discoverd wires it to a node).
package dnsapi
