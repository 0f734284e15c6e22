// Package snapshot is the file format of a discoverd backup, as GET
// /raft/snapshot streams it and PUT /raft/snapshot takes it back:
//
//	discoverd-snapshot 1\n
//	{header: format, discoverd version, created, index, services, instances}\n
//	{the registry: the same JSON as the state machine's Raft snapshot}\n
//	sha256 <64 hex digits of every byte above>\n
//
// The checksum comes last so that a snapshot can be streamed while it is
// taken; a reader verifies it before it trusts any of the rest.
//
// It imports only api and the standard library, so that discoverctl can
// inspect a file without any server package; the node writes and restores
// them, the state machine (fsm) encodes and checks the registry part.
package snapshot
