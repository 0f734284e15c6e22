package bus

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/discoverd/discoverd/api"
)

// HeartbeatHandler takes one heartbeat (or registration) of an instance of
// service. It is the same method the HTTP API calls on the node, so both
// transports share one code path. inst has been validated and prepared
// (api.PrepareInstance with no path id); the handler may keep it.
type HeartbeatHandler interface {
	Heartbeat(ctx context.Context, service string, inst *api.Instance) (*api.Instance, error)
}

// HeartbeatTimeout bounds one call of HeartbeatHandler.Heartbeat from the
// subscriber.
const HeartbeatTimeout = 5 * time.Second

// Pending limits of the heartbeat subscriptions, shared by all of a
// subscriber's workers: a burst of heartbeats queues in the client rather
// than being dropped. Beyond them nats.go drops messages (counted in
// Dropped) and reports a slow consumer.
const (
	heartbeatPendingMsgs  = 4 << 20
	heartbeatPendingBytes = 1 << 30
	minWorkerPendingMsgs  = 256 << 10
	minWorkerPendingBytes = 64 << 20
)

// drainTimeout bounds how long Close waits for queued heartbeats.
const drainTimeout = 10 * time.Second

// okBody is the answer to a heartbeat request that succeeded.
var okBody = mustJSON(api.OK{OK: true})

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

// HeartbeatSubscriber takes heartbeats from discoverd.heartbeat.* and hands
// them to a HeartbeatHandler. See SubscribeHeartbeats.
type HeartbeatSubscriber struct {
	nc   *nats.Conn
	h    HeartbeatHandler
	log  zerolog.Logger
	subs []*nats.Subscription

	// ctx is the parent of every handler call; Close cancels it.
	ctx    context.Context
	cancel context.CancelFunc

	received  atomic.Uint64
	malformed atomic.Uint64
	failed    atomic.Uint64

	closeOnce sync.Once
}

// SubscribeHeartbeats subscribes to the heartbeats of every service on nc
// with workers subscriptions in the queue group queue, and hands each
// heartbeat to h.
//
// Within one queue group the server delivers each message once, to one of
// its subscriptions, so a node processes each heartbeat once, in parallel
// across its workers (each subscription has its own goroutine). Every node
// subscribing with its own queue name (e.g. its address) still hears every
// heartbeat, across routes and leafnodes.
//
// Per message: the service is the subject's last token (checked with
// api.ValidateServiceName), the payload is the JSON of an api.Instance
// (api.PrepareInstance with no path id), and h.Heartbeat is called with a
// HeartbeatTimeout context. If the message has a reply subject, the answer is
// the JSON of api.OK on success or of the api.Error on failure (a malformed
// message gets a validation_error); otherwise nothing is sent back. A
// handler that returns ErrNoReply took the heartbeat but leaves the answer to
// another node: nothing is sent, counted or logged. A
// malformed message is counted (Malformed), logged at debug level and
// dropped; it never stops the subscriber.
//
// Flow: heartbeats queue in nc's subscriptions (pending limits shared by the
// workers: 4 Mi messages, 1 GiB) before the handler takes them; beyond that
// nats.go drops them (Dropped). Before they reach nc, the server queues them
// for the connection and drops them past 48 MiB queued rather than slow the
// services down (see ServerConfig). Either happens only when the handler
// falls far behind the rate of heartbeats.
//
// It flushes nc before returning, so the server has the subscriptions when
// it returns.
func SubscribeHeartbeats(nc *nats.Conn, queue string, workers int, h HeartbeatHandler, log zerolog.Logger) (*HeartbeatSubscriber, error) {
	if nc == nil {
		return nil, errors.New("bus: SubscribeHeartbeats: nil connection")
	}
	if h == nil {
		return nil, errors.New("bus: SubscribeHeartbeats: nil handler")
	}
	if queue == "" {
		// Without a queue group each worker would get every heartbeat.
		return nil, errors.New("bus: SubscribeHeartbeats: empty queue name")
	}
	if workers < 1 {
		workers = 1
	}
	ctx, cancel := context.WithCancel(context.Background())
	hs := &HeartbeatSubscriber{
		nc:     nc,
		h:      h,
		log:    log.With().Str("component", "heartbeats").Logger(),
		ctx:    ctx,
		cancel: cancel,
	}
	msgs := max(heartbeatPendingMsgs/workers, minWorkerPendingMsgs)
	bytes := max(heartbeatPendingBytes/workers, minWorkerPendingBytes)
	for range workers {
		sub, err := nc.QueueSubscribe(HeartbeatWildcard, queue, hs.handle)
		if err == nil {
			hs.subs = append(hs.subs, sub)
			err = sub.SetPendingLimits(msgs, bytes)
		}
		if err != nil {
			hs.unsubscribe()
			cancel()
			return nil, err
		}
	}
	if err := nc.FlushTimeout(5 * time.Second); err != nil {
		hs.unsubscribe()
		cancel()
		return nil, err
	}
	return hs, nil
}

// handle processes one heartbeat message. It is the hottest path of
// discoverd: no fmt, and no allocation beyond the instance itself (its
// strings share one copy of the payload, see api.DecodeInstance), its meta map,
// the call's context (see callContext) and, on failure, the answer.
func (hs *HeartbeatSubscriber) handle(msg *nats.Msg) {
	hs.received.Add(1)
	subj := msg.Subject
	if len(subj) <= len(HeartbeatPrefix) || subj[:len(HeartbeatPrefix)] != HeartbeatPrefix {
		hs.reject(msg, api.Errorf(api.CodeValidation, "subject %q is not a heartbeat subject", subj))
		return
	}
	service := subj[len(HeartbeatPrefix):]
	if err := api.ValidateServiceName(service); err != nil {
		hs.reject(msg, err)
		return
	}
	inst := new(api.Instance)
	if err := api.DecodeInstance(msg.Data, inst); err != nil {
		hs.reject(msg, api.Errorf(api.CodeValidation, "malformed instance JSON: %v", err))
		return
	}
	if err := api.PrepareInstance(inst, ""); err != nil {
		hs.reject(msg, err)
		return
	}
	ctx := newCallContext(hs.ctx, HeartbeatTimeout)
	_, err := hs.h.Heartbeat(ctx, service, inst)
	ctx.release()
	if err == ErrNoReply {
		return
	}
	if err != nil {
		if err == ErrNoReply || errors.Is(err, ErrNoReply) {
			return
		}
		hs.failed.Add(1)
		if e := hs.log.Debug(); e.Enabled() {
			e.Err(err).Str("service", service).Str("instance", inst.ID).Msg("heartbeat failed")
		}
		if msg.Reply != "" {
			hs.respond(msg.Reply, mustJSONError(err))
		}
		return
	}
	if msg.Reply != "" {
		hs.respond(msg.Reply, okBody)
	}
}

// reject drops a malformed message: counted, logged at debug level, and
// answered with a validation_error if it asked for an answer.
func (hs *HeartbeatSubscriber) reject(msg *nats.Msg, err error) {
	hs.malformed.Add(1)
	if e := hs.log.Debug(); e.Enabled() {
		e.Err(err).Str("subject", msg.Subject).Int("bytes", len(msg.Data)).Bool("reply", msg.Reply != "").
			Msg("malformed heartbeat dropped")
	}
	if msg.Reply != "" {
		ae := api.AsError(err)
		if ae.Code != api.CodeValidation {
			ae = &api.Error{Code: api.CodeValidation, Message: ae.Message}
		}
		hs.respond(msg.Reply, mustJSONError(ae))
	}
}

func mustJSONError(err error) []byte {
	b, jerr := json.Marshal(api.AsError(err))
	if jerr != nil {
		// An api.Error always encodes; keep the contract anyway.
		return []byte(`{"code":"unknown_error","message":"error encoding the error","retry":false}`)
	}
	return b
}

func (hs *HeartbeatSubscriber) respond(reply string, body []byte) {
	if err := hs.nc.Publish(reply, body); err != nil {
		if e := hs.log.Debug(); e.Enabled() {
			e.Err(err).Str("reply", reply).Msg("heartbeat answer not sent")
		}
	}
}

// Received is the number of heartbeat messages received, malformed or not.
func (hs *HeartbeatSubscriber) Received() uint64 { return hs.received.Load() }

// Malformed is the number of messages dropped for a bad subject token, bad
// JSON or an invalid instance.
func (hs *HeartbeatSubscriber) Malformed() uint64 { return hs.malformed.Load() }

// Failed is the number of well-formed heartbeats the handler refused.
func (hs *HeartbeatSubscriber) Failed() uint64 { return hs.failed.Load() }

// Dropped is the number of messages nats.go dropped because a subscription's
// pending limits were exceeded (the handler did not keep up).
func (hs *HeartbeatSubscriber) Dropped() uint64 {
	var n uint64
	for _, sub := range hs.subs {
		if d, err := sub.Dropped(); err == nil && d > 0 {
			n += uint64(d)
		}
	}
	return n
}

// Close stops the subscriber: it drains its subscriptions (no new message
// is taken; those already queued are processed), waiting up to 10 s, then
// cancels the context of handler calls still running. It does not close the
// connection. Close is idempotent.
func (hs *HeartbeatSubscriber) Close() error {
	var err error
	hs.closeOnce.Do(func() {
		err = hs.drain()
		hs.cancel()
	})
	return err
}

func (hs *HeartbeatSubscriber) drain() error {
	var errs []error
	closed := make([]<-chan nats.SubStatus, 0, len(hs.subs))
	for _, sub := range hs.subs {
		ch := sub.StatusChanged(nats.SubscriptionClosed)
		if err := sub.Drain(); err != nil {
			if !errors.Is(err, nats.ErrBadSubscription) && !errors.Is(err, nats.ErrConnectionClosed) {
				errs = append(errs, err)
			}
			continue
		}
		closed = append(closed, ch)
	}
	timer := time.NewTimer(drainTimeout)
	defer timer.Stop()
	for _, ch := range closed {
		select {
		case <-ch:
		case <-timer.C:
			hs.unsubscribe()
			return errors.Join(append(errs, errors.New("bus: heartbeat subscriber: drain timed out"))...)
		}
	}
	return errors.Join(errs...)
}

func (hs *HeartbeatSubscriber) unsubscribe() {
	for _, sub := range hs.subs {
		_ = sub.Unsubscribe()
	}
}
