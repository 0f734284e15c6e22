package bus

import (
	"fmt"
	"strings"
	"sync/atomic"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/rs/zerolog"
)

// natsLogger bridges nats-server's logger to zerolog.
//
// Levels: notice → info, warn → warn, error → error, fatal → error with
// fatal=true (the embedded server must never exit the process: a fatal
// condition, such as a port it cannot listen on, shows up as StartServer
// failing), debug → debug, trace → trace. The server only formats debug and
// trace lines when StartServer enabled them: debug when the logger passes
// the debug level, trace (every protocol line, very verbose) only when
// ServerConfig.Trace is set and the logger passes the trace level, since
// zerolog.New's loggers pass the trace level unless told otherwise.
type natsLogger struct {
	log zerolog.Logger
	// fatal receives the first fatal message, so that StartServer fails at
	// once instead of waiting out its timeout.
	fatal chan string
	// refused counts the limit violations the server reports as errors.
	refused *limitRefusals
}

// limitRefusals counts clients refused for the server's limits, as
// nats-server reports them only in its log.
type limitRefusals struct {
	conns, payload, subs atomic.Uint64
}

func (r *limitRefusals) count(msg string) {
	switch {
	case strings.Contains(msg, server.ErrMaxPayload.Error()):
		r.payload.Add(1)
	case strings.Contains(msg, server.ErrTooManyConnections.Error()):
		r.conns.Add(1)
	case strings.Contains(msg, server.ErrTooManySubs.Error()):
		r.subs.Add(1)
	}
}

var _ server.Logger = natsLogger{}

func (l natsLogger) Noticef(format string, v ...any) {
	// The start-up banner's indented detail lines ("  Version: ...",
	// "  Git: [not set]", "  ID: ...") tell a user nothing to act on; the
	// node's own "nats started" line names the ports.
	if strings.HasPrefix(format, "  ") {
		l.log.Debug().Msgf(format, v...)
		return
	}
	l.log.Info().Msgf(format, v...)
}
func (l natsLogger) Warnf(format string, v ...any) {
	// nats-server warns that solicited routes and leafnodes skip
	// verification because the peer TLS config sets InsecureSkipVerify; the
	// node's config verifies the chain against the cluster's CA itself in
	// VerifyConnection (pki.Reloader.StaticServerConfig), so the warning
	// would tell an operator something false.
	if strings.Contains(format, "will not be verified") {
		l.log.Debug().Msgf(format, v...)
		return
	}
	l.log.Warn().Msgf(format, v...)
}
func (l natsLogger) Errorf(format string, v ...any) {
	msg := fmt.Sprintf(format, v...)
	if l.refused != nil {
		l.refused.count(msg)
	}
	l.log.Error().Msg(msg)
}
func (l natsLogger) Fatalf(format string, v ...any) {
	msg := fmt.Sprintf(format, v...)
	l.log.Error().Bool("fatal", true).Msg(msg)
	select {
	case l.fatal <- msg:
	default:
	}
}
func (l natsLogger) Debugf(format string, v ...any) { l.log.Debug().Msgf(format, v...) }
func (l natsLogger) Tracef(format string, v ...any) { l.log.Trace().Msgf(format, v...) }

// levelEnabled reports whether log writes events at lvl. It works for the
// zero Logger too (which writes nothing).
func levelEnabled(log zerolog.Logger, lvl zerolog.Level) bool {
	e := log.WithLevel(lvl)
	if e == nil {
		return false
	}
	e.Discard()
	return true
}
