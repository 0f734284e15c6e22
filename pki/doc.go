// Package pki makes and loads discoverd's certificates.
//
// CreateCA and CreateCert write a cluster's CA and its node and client
// certificates with the standard library alone (ECDSA P-256), as `consul tls`
// does: discoverctl's `tls` commands and the tests use them. Load reads a
// node's certificate, key and CA into a Reloader, whose tls.Configs read the
// files in force at each handshake, so SIGHUP can swap them without a
// restart.
//
// It may import only the standard library.
package pki
