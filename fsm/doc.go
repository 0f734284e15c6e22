// Package fsm is discoverd's replicated state machine: services, instances,
// leaders, service meta and node announcements, the commands that change
// them, and the events those changes produce. It implements raft.FSM.
//
// It is pure and deterministic: no clocks, no goroutines, no network. The
// same log applied anywhere gives the same state and the same events.
//
// It may import the standard library, package api and hashicorp/raft's types.
package fsm
