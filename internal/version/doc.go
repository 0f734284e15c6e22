// Package version says which build of discoverd is running. Every binary
// (discoverd, discoverctl, discoverd-bench) reads it, and the node announces
// it to the cluster.
//
// It imports only the standard library, so that the client side
// (discoverctl) can use it without depending on any server package.
package version
