package bus

import "errors"

// ErrNoReply, returned by a HeartbeatHandler, means the heartbeat was taken
// but this subscriber must not answer it: another node answers (a follower
// leaves requests to the Raft leader, so each request gets one answer). It is
// neither counted as a failure nor logged.
var ErrNoReply = errors.New("bus: heartbeat left to another node to answer")
