package bus

import "github.com/discoverd/discoverd/api"

const (
	// HeartbeatPrefix starts every heartbeat subject; the service name is the
	// one token after it.
	HeartbeatPrefix = "discoverd.heartbeat."
	// HeartbeatWildcard matches the heartbeats of every service.
	HeartbeatWildcard = HeartbeatPrefix + "*"
	// EventsPrefix starts every event subject:
	// discoverd.events.{service}.{kind}.
	EventsPrefix = "discoverd.events."
	// AllEventsWildcard matches every event of every service.
	AllEventsWildcard = EventsPrefix + ">"
)

// HeartbeatSubject is the subject on which the instances of service send
// their heartbeats.
func HeartbeatSubject(service string) string {
	return HeartbeatPrefix + service
}

// EventSubject is the subject of the events of one kind of a service. It
// builds the string in one allocation: it is on the event fan-out path.
func EventSubject(service string, kind api.EventKind) string {
	return EventsPrefix + service + "." + string(kind)
}

// EventsWildcard matches every event of service, whatever its kind.
func EventsWildcard(service string) string {
	return EventsPrefix + service + ".*"
}
