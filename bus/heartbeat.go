package bus

import (
	"context"
	"encoding/json"
	"errors"
	"runtime"
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

// QuickHeartbeatHandler is a HeartbeatHandler that can take most heartbeats
// at once, without waiting for anything (no I/O, no Raft, no lock held by a
// slow path): for a heartbeat of an instance that is already registered
// unchanged, only its time is recorded. The subscriber calls
// QuickHeartbeat on the goroutine that receives the messages, and hands
// only the heartbeats it does not take to its workers' Heartbeat, so that
// the common heartbeat costs no goroutine switch and no context.
type QuickHeartbeatHandler interface {
	HeartbeatHandler
	// QuickHeartbeat takes the heartbeat if it can at once and reports
	// whether it did; err (nil, ErrNoReply or an error to answer with) is
	// the answer then. It must not block and must not keep inst or any of
	// its strings: inst is reused for the next message.
	QuickHeartbeat(service string, inst *api.Instance) (taken bool, err error)
	// QuickHeartbeatUnchanged is QuickHeartbeat for a heartbeat not decoded
	// yet: it takes the heartbeat only if the instance id of service is
	// registered as stored and same(stored) reports that the heartbeat
	// carries that registration, and otherwise returns false (the heartbeat
	// is then decoded and offered to QuickHeartbeat). id shares the
	// message's memory: it must not be kept.
	QuickHeartbeatUnchanged(service, id string, same func(stored *api.Instance) bool) (taken bool, err error)
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

// slowQueue is how many heartbeats the receiving goroutines may have handed
// to the workers before they wait for one: a burst of registrations queues
// here, and past it in nats.go's pending messages.
const slowQueue = 4096

// receiversPerCore: one receiving subscription per four cores. Each costs a
// goroutine switch per message that the single subscription of a small
// machine saves (a fifth of a heartbeat's cost on two cores, measured), while
// the in-process connection's one read loop bounds what more of them could
// take anyway.
const receiversPerCore = 4

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
	nc    *nats.Conn
	h     HeartbeatHandler
	quick QuickHeartbeatHandler // h, if it is one
	log   zerolog.Logger
	subs  []*nats.Subscription

	// slow carries the heartbeats the receivers do not take at once to the
	// workers; stop ends the workers once the subscriptions are drained.
	slow    chan slowHeartbeat
	stop    chan struct{}
	workers sync.WaitGroup

	// ctx is the parent of every handler call; Close cancels it.
	ctx    context.Context
	cancel context.CancelFunc

	received  atomic.Uint64
	malformed atomic.Uint64
	failed    atomic.Uint64

	closeOnce sync.Once
}

// SubscribeHeartbeats subscribes to the heartbeats of every service on nc
// in the queue group queue, and hands each heartbeat to h, with up to
// workers calls of h.Heartbeat at a time.
//
// Within one queue group the server delivers each message once, to one of
// its subscriptions, so a node processes each heartbeat once. Every node
// subscribing with its own queue name (e.g. its address) still hears every
// heartbeat, across routes and leafnodes.
//
// The node receives on one subscription per four cores (at least one),
// each with a goroutine of its own. When h is a QuickHeartbeatHandler, the
// receiving goroutine offers it each heartbeat first, and only those it does
// not take at once (a registration, a node out of step) go on to the
// workers; otherwise every heartbeat goes to the workers. The workers call
// h.Heartbeat, which may wait (a Raft write, a forward to the leader),
// without holding up the heartbeats behind it.
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
// receivers: 4 Mi messages, 1 GiB) before the handler takes them; beyond
// that nats.go drops them (Dropped). Heartbeats for the workers queue in a
// channel of 4096 first; when it is full, the receivers wait. Before they
// reach nc, the server queues them for the connection and drops them past
// 48 MiB queued rather than slow the services down (see ServerConfig).
// Either happens only when the handler falls far behind the rate of
// heartbeats.
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
		// Without a queue group each receiver would get every heartbeat.
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
		slow:   make(chan slowHeartbeat, slowQueue),
		stop:   make(chan struct{}),
	}
	hs.quick, _ = h.(QuickHeartbeatHandler)
	hs.workers.Add(workers)
	for range workers {
		go hs.work()
	}
	fail := func(err error) (*HeartbeatSubscriber, error) {
		hs.unsubscribe()
		close(hs.stop)
		cancel()
		return nil, err
	}
	receivers := max(1, runtime.GOMAXPROCS(0)/receiversPerCore)
	msgs := max(heartbeatPendingMsgs/receivers, minWorkerPendingMsgs)
	bytes := max(heartbeatPendingBytes/receivers, minWorkerPendingBytes)
	for range receivers {
		// Each receiver decodes into an instance of its own, reused for
		// every heartbeat the quick path takes.
		r := newReceiver(hs)
		sub, err := nc.QueueSubscribe(HeartbeatWildcard, queue, r.handle)
		if err == nil {
			hs.subs = append(hs.subs, sub)
			err = sub.SetPendingLimits(msgs, bytes)
		}
		if err != nil {
			return fail(err)
		}
	}
	if err := nc.FlushTimeout(5 * time.Second); err != nil {
		return fail(err)
	}
	return hs, nil
}

// slowHeartbeat is a decoded heartbeat on its way to a worker.
type slowHeartbeat struct {
	service string
	inst    *api.Instance
	reply   string
}

// receiver is the state of one receiving subscription, used by its own
// goroutine only.
type receiver struct {
	hs      *HeartbeatSubscriber
	scratch api.Instance
	raw     rawHeartbeat
	// sameRaw is raw.sameAs, bound once so that passing it allocates nothing.
	sameRaw func(*api.Instance) bool
}

func newReceiver(hs *HeartbeatSubscriber) *receiver {
	r := &receiver{hs: hs}
	r.sameRaw = r.raw.sameAs
	return r
}

// handle processes one heartbeat message. It is the hottest path of
// discoverd: no fmt, and for a heartbeat of an instance registered
// unchanged in its plain JSON form no goroutine switch, no decoding and no
// allocation (see rawHeartbeat). Otherwise the instance is decoded (its
// strings share one copy of the payload, see api.DecodeInstance).
func (r *receiver) handle(msg *nats.Msg) {
	hs := r.hs
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
	if hs.quick != nil && r.raw.scan(msg.Data) {
		taken, err := hs.quick.QuickHeartbeatUnchanged(service, r.raw.idString(), r.sameRaw)
		r.raw.data = nil
		if taken {
			hs.answerRaw(service, msg.Reply, err)
			return
		}
	}
	// The decoder sets only the fields the message has: none may be left
	// over from the last message, whatever became of it.
	inst := &r.scratch
	*inst = api.Instance{}
	if err := api.DecodeInstance(msg.Data, inst); err != nil {
		hs.reject(msg, api.Errorf(api.CodeValidation, "malformed instance JSON: %v", err))
		return
	}
	if err := api.PrepareInstance(inst, ""); err != nil {
		hs.reject(msg, err)
		return
	}
	if hs.quick != nil {
		if taken, err := hs.quick.QuickHeartbeat(service, inst); taken {
			hs.answer(service, inst, msg.Reply, err)
			// Nothing of the message may stay alive in the scratch instance.
			*inst = api.Instance{}
			return
		}
	}
	// The worker's handler may keep the instance: it gets one of its own.
	own := new(api.Instance)
	*own = *inst
	*inst = api.Instance{}
	select {
	case hs.slow <- slowHeartbeat{service: service, inst: own, reply: msg.Reply}:
	case <-hs.stop:
		// Only after a drain that timed out: the workers are gone.
	}
}

// work runs h.Heartbeat for the heartbeats the receivers hand over, until
// stop, then finishes those still queued.
func (hs *HeartbeatSubscriber) work() {
	defer hs.workers.Done()
	for {
		select {
		case hb := <-hs.slow:
			hs.call(hb)
		case <-hs.stop:
			for {
				select {
				case hb := <-hs.slow:
					hs.call(hb)
				default:
					return
				}
			}
		}
	}
}

func (hs *HeartbeatSubscriber) call(hb slowHeartbeat) {
	ctx := newCallContext(hs.ctx, HeartbeatTimeout)
	_, err := hs.h.Heartbeat(ctx, hb.service, hb.inst)
	ctx.release()
	hs.answer(hb.service, hb.inst, hb.reply, err)
}

// answerRaw is answer for a heartbeat taken without decoding it.
func (hs *HeartbeatSubscriber) answerRaw(service, reply string, err error) {
	if err == nil {
		if reply != "" {
			hs.respond(reply, okBody)
		}
		return
	}
	hs.answer(service, &api.Instance{}, reply, err)
}

// answer counts, logs and answers (when asked to) the outcome err of a
// heartbeat. inst is only read for the log.
func (hs *HeartbeatSubscriber) answer(service string, inst *api.Instance, reply string, err error) {
	if err != nil {
		if err == ErrNoReply || errors.Is(err, ErrNoReply) {
			return
		}
		hs.failed.Add(1)
		if e := hs.log.Debug(); e.Enabled() {
			e.Err(err).Str("service", service).Str("instance", inst.ID).Msg("heartbeat failed")
		}
		if reply != "" {
			hs.respond(reply, mustJSONError(err))
		}
		return
	}
	if reply != "" {
		hs.respond(reply, okBody)
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
// is taken; those already queued are processed, by the workers too), waiting
// up to 10 s in all, then cancels the context of handler calls still
// running. It does not close the connection. Close is idempotent.
func (hs *HeartbeatSubscriber) Close() error {
	var err error
	hs.closeOnce.Do(func() {
		timer := time.NewTimer(drainTimeout)
		defer timer.Stop()
		err = hs.drain(timer.C)
		if err != nil {
			// Out of time already: calls still running are not waited for.
			hs.cancel()
		}
		close(hs.stop)
		done := make(chan struct{})
		go func() { hs.workers.Wait(); close(done) }()
		select {
		case <-done:
		case <-timer.C:
			err = errors.Join(err, errors.New("bus: heartbeat subscriber: workers did not finish in time"))
		}
		hs.cancel()
	})
	return err
}

func (hs *HeartbeatSubscriber) drain(timeout <-chan time.Time) error {
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
	for _, ch := range closed {
		select {
		case <-ch:
		case <-timeout:
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
