package bus

import (
	"bytes"
	"encoding/json"
	"errors"
	"sync"
	"sync/atomic"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/discoverd/discoverd/api"
)

// maxKeptBuffer is the largest encoding buffer the publisher keeps between
// events; a larger one (from an unusually large event) is dropped after use.
const maxKeptBuffer = 256 << 10

// EventPublisher publishes events as the JSON of api.Event on
// discoverd.events.{service}.{kind}.
//
// Publish never waits for subscribers. nats.go's Publish copies the message
// into the connection's write buffer and returns; when that buffer is full
// (32 KiB by default) it writes it out in the caller, which for an
// in-process connection (Server.Connect) means the server parsing it and
// queueing each message for every subscriber: memory work only. The server
// is configured not to stall publishers for a slow subscriber
// (NoFastProducerStall): once 48 MiB (3/4 of the 64 MiB MaxPending) are
// queued for one subscriber, further messages to it are dropped, and the
// server closes it when a socket write to it blocks for 2 s, when its queue
// passes 64 MiB, or when it stops answering pings (about 9 s). So a slow
// subscriber loses events and then its connection, and never slows Publish.
// While the connection reconnects, nats.go keeps messages in its reconnect
// buffer (8 MiB by default) and, once that is full, Publish fails at once
// with nats.ErrReconnectBufExceeded; on a closed connection it fails with
// nats.ErrConnectionClosed. Errors are returned and counted, never retried:
// NATS events are at-most-once, and subscribers detect gaps with the index.
//
// An EventPublisher is safe for concurrent use; events published from one
// goroutine go out in the order published.
type EventPublisher struct {
	nc  *nats.Conn
	log zerolog.Logger

	mu  sync.Mutex // guards buf and enc
	buf bytes.Buffer
	enc *json.Encoder

	published atomic.Uint64
	failed    atomic.Uint64
}

// NewEventPublisher returns a publisher of events on nc.
func NewEventPublisher(nc *nats.Conn, log zerolog.Logger) *EventPublisher {
	p := &EventPublisher{nc: nc, log: log.With().Str("component", "events").Logger()}
	p.resetEncoder()
	return p
}

func (p *EventPublisher) resetEncoder() {
	p.buf = bytes.Buffer{}
	p.enc = json.NewEncoder(&p.buf)
	p.enc.SetEscapeHTML(false)
}

// Publish sends ev on EventSubject(ev.Service, ev.Kind). The encoding buffer
// is reused across calls: nats.go copies the payload before Publish returns.
func (p *EventPublisher) Publish(ev *api.Event) error {
	if ev == nil {
		return errors.New("bus: Publish: nil event")
	}
	subj := EventSubject(ev.Service, ev.Kind)
	p.mu.Lock()
	p.buf.Reset()
	err := p.enc.Encode(ev)
	if err == nil {
		data := p.buf.Bytes()
		data = data[:len(data)-1] // Encode's trailing newline
		err = p.nc.Publish(subj, data)
	}
	if p.buf.Cap() > maxKeptBuffer {
		p.resetEncoder()
	}
	p.mu.Unlock()
	if err != nil {
		p.failed.Add(1)
		if e := p.log.Debug(); e.Enabled() {
			e.Err(err).Str("subject", subj).Uint64("index", ev.Index).Msg("event not published")
		}
		return err
	}
	p.published.Add(1)
	return nil
}

// Published is the number of events handed to the connection.
func (p *EventPublisher) Published() uint64 { return p.published.Load() }

// Failed is the number of events Publish could not hand to the connection.
func (p *EventPublisher) Failed() uint64 { return p.failed.Load() }
