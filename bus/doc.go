// Package bus is discoverd's NATS layer.
//
// It owns four things, and nothing else:
//
//   - The embedded NATS server: every server.Options field discoverd sets is
//     set in one function (buildOptions). Voters join one NATS cluster over
//     routes (ServerConfig.ClusterAddr, Routes); a proxy's server joins it as a
//     leafnode of the voters (ServerConfig.LeafRemotes to the voters'
//     LeafAddr). Routes and leaf remotes can be changed at runtime
//     (Server.SetRoutes, Server.SetLeafRemotes) through the server's own
//     option reload, as the cluster learns its peers' NATS addresses from the
//     replicated state. The daemon reaches its server over an in-process
//     connection (Server.Connect), never over loopback TCP.
//   - The subject names (subjects.go):
//     discoverd.heartbeat.{service} and discoverd.events.{service}.{kind}.
//   - The encoding of heartbeat and event messages: a heartbeat is the JSON of
//     an api.Instance, answered (when it carries a reply subject) with the
//     JSON of api.OK or of an api.Error; an event is the JSON of an api.Event.
//   - The heartbeat subscriber (SubscribeHeartbeats), which decodes heartbeats
//     and hands them to the node through the same HeartbeatHandler method the
//     HTTP API calls (a QuickHeartbeatHandler takes the common heartbeat on
//     the receiving goroutine first), and the event publisher
//     (EventPublisher).
//
// Core NATS is at-most-once: nothing here retries or persists a message.
// Event subscribers detect gaps with the event index.
//
// Imports: the standard library, api, github.com/nats-io/nats-server/v2,
// github.com/nats-io/nats.go and github.com/rs/zerolog. It must not import
// the node, fsm or httpapi packages: the node imports bus, not the reverse.
package bus
