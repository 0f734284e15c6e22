// Package dirlock keeps two discoverd processes off one data dir: a second
// one would otherwise wait forever on the Raft store's file lock, with no
// log line and no listener. The node takes the lock before it opens
// anything in the directory.
//
// It imports only the standard library.
package dirlock
