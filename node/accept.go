package node

import (
	"errors"
	"net"
	"os"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/rs/zerolog"
)

// Backoff of the accept loop after an error that is not the listener
// closing, as net/http's own: it never spins.
const (
	acceptBackoffMin = 5 * time.Millisecond
	acceptBackoffMax = time.Second
)

// acceptor accepts the node's connections and rides out running out of
// file descriptors: the node keeps serving the connections it has, logs
// once when it runs out and once when it recovers, and refuses (accepts
// and closes at once, so that clients fail fast rather than wait in the
// backlog) what it cannot take, counting the refusals.
type acceptor struct {
	ln  net.Listener
	log zerolog.Logger
	// reserve is a descriptor held back for the moment the process runs
	// out: closing it frees one to accept a waiting connection with and
	// close it.
	reserve *os.File
	// refused counts connections closed unserved for want of descriptors.
	refused atomic.Uint64
	// outOfFiles is set from the first EMFILE/ENFILE until an accept
	// succeeds again. Only the accept loop uses it.
	outOfFiles bool
}

func newAcceptor(ln net.Listener, log zerolog.Logger) *acceptor {
	a := &acceptor{ln: ln, log: log}
	a.reserve, _ = os.Open(os.DevNull)
	return a
}

// accept returns the next connection, or the error that closed the
// listener.
func (a *acceptor) accept() (net.Conn, error) {
	var delay time.Duration
	for {
		conn, err := a.ln.Accept()
		if err == nil {
			if a.outOfFiles {
				a.outOfFiles = false
				a.log.Warn().Uint64("refused_total", a.refused.Load()).Msg("file descriptors available again: accepting connections")
			}
			return conn, nil
		}
		if errors.Is(err, net.ErrClosed) {
			return nil, err
		}
		if errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) {
			if !a.outOfFiles {
				a.outOfFiles = true
				a.log.Error().Err(err).Msg("out of file descriptors: serving the open connections, refusing new ones until some close")
			}
			a.shed()
		}
		// Any other accept error (a connection aborted before it was
		// taken, ...) is passing too.
		if delay == 0 {
			delay = acceptBackoffMin
		} else {
			delay = min(2*delay, acceptBackoffMax)
		}
		time.Sleep(delay)
	}
}

// shed refuses one waiting connection with the reserved descriptor.
func (a *acceptor) shed() {
	if a.reserve == nil {
		return
	}
	a.reserve.Close()
	a.reserve = nil
	if conn, err := a.ln.Accept(); err == nil {
		conn.Close()
		a.refused.Add(1)
	}
	a.reserve, _ = os.Open(os.DevNull)
}

func (a *acceptor) close() {
	if a.reserve != nil {
		a.reserve.Close()
	}
}
