package client

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"net/url"
	"sync"
	"time"

	"github.com/discoverd/discoverd/api"
)

// DefaultProto is the proto of an instance registered without one.
const DefaultProto = "tcp"

// RegisterOption configures one registration.
type RegisterOption func(*regConfig)

type regConfig struct {
	ttl     time.Duration
	onError func(error)
	proto   string
	id      string
	check   *checkConfig
}

// HeartbeatTTL sets the TTL the Heartbeater assumes for this instance
// (default: the client's, see WithTTL).
func HeartbeatTTL(ttl time.Duration) RegisterOption {
	return func(c *regConfig) {
		if ttl > 0 {
			c.ttl = ttl
		}
	}
}

// OnError sets a function called, on its own goroutine, when the
// heartbeats have been failing for longer than the TTL (so the server has
// probably expired the instance). It is called once per such episode; the
// error is what Err returns.
func OnError(fn func(error)) RegisterOption {
	return func(c *regConfig) { c.onError = fn }
}

// Proto sets the instance's proto for Register (default "tcp").
func Proto(proto string) RegisterOption {
	return func(c *regConfig) { c.proto = proto }
}

// InstanceID sets the instance's id for Register (default: derived from
// proto and addr, see api.DefaultInstanceID).
func InstanceID(id string) RegisterOption {
	return func(c *regConfig) { c.id = id }
}

func (c *Client) regConfig(opts []RegisterOption) *regConfig {
	cfg := &regConfig{ttl: c.ttl, proto: DefaultProto}
	for _, o := range opts {
		o(cfg)
	}
	return cfg
}

// Heartbeater keeps one registered instance alive: it sends a heartbeat
// (the full instance) every TTL/2 minus a random jitter, and while
// heartbeats fail it retries every 200-500 ms (faster for a TTL under 2 s)
// across the client's servers. A heartbeat of an instance the server has
// expired registers it again (with a new index). Every failure is retried,
// whatever its kind (a removed service may be created again); Err and
// OnError report failures that outlast the TTL.
type Heartbeater struct {
	c       *Client
	service string
	id      string
	ttl     time.Duration
	onError func(error)

	ctx    context.Context // canceled by Stop and Close
	cancel context.CancelFunc
	stop   chan struct{}
	done   chan struct{}

	stopOnce  sync.Once
	closeOnce sync.Once
	closeErr  error

	// sendMu orders sends, so that a heartbeat with old meta never
	// overtakes a SetMeta.
	sendMu sync.Mutex

	mu            sync.Mutex
	inst          *api.Instance
	lastOK        time.Time
	lastConfirmed time.Time
	err           error

	// check is nil without WithCheck; state is its state (CheckPassing
	// without a check), and changes reports each change of it. registered
	// says whether a checked instance is meant to be on the server: set
	// before its registration is sent, cleared before its DELETE.
	check      *checkConfig
	state      CheckState
	changes    chan CheckState
	registered bool
}

// Register registers an instance at addr (host:port) of service with meta
// and keeps it alive until the Heartbeater is closed. The registration is
// synchronous (retried across the servers within ctx); ctx does not bound
// the heartbeats that follow. The service must exist (see
// AddServiceAndRegister).
func (c *Client) Register(ctx context.Context, service, addr string, meta map[string]string, opts ...RegisterOption) (*Heartbeater, error) {
	cfg := c.regConfig(opts)
	return c.register(ctx, service, &api.Instance{ID: cfg.id, Addr: addr, Proto: cfg.proto, Meta: meta}, cfg)
}

// RegisterInstance is Register with a whole instance. An empty Proto is
// DefaultProto; an empty ID is derived from proto and addr. inst is copied.
func (c *Client) RegisterInstance(ctx context.Context, service string, inst *api.Instance, opts ...RegisterOption) (*Heartbeater, error) {
	if inst == nil {
		return nil, api.Errorf(api.CodeValidation, "no instance to register")
	}
	in := *inst
	if in.Proto == "" {
		in.Proto = DefaultProto
	}
	return c.register(ctx, service, &in, c.regConfig(opts))
}

// AddServiceAndRegister creates service (if it does not exist yet, with the
// default config) and registers an instance at addr.
func (c *Client) AddServiceAndRegister(ctx context.Context, service, addr string, meta map[string]string, opts ...RegisterOption) (*Heartbeater, error) {
	if err := c.AddService(ctx, service, nil); err != nil && !IsExists(err) {
		return nil, err
	}
	return c.Register(ctx, service, addr, meta, opts...)
}

func (c *Client) register(ctx context.Context, service string, in *api.Instance, cfg *regConfig) (*Heartbeater, error) {
	if err := api.ValidateServiceName(service); err != nil {
		return nil, err
	}
	in.Meta = maps.Clone(in.Meta)
	if err := api.PrepareInstance(in, ""); err != nil {
		return nil, err
	}
	h := &Heartbeater{
		c:       c,
		service: service,
		id:      in.ID,
		ttl:     cfg.ttl,
		onError: cfg.onError,
		inst:    in,
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
		check:   cfg.check,
		state:   CheckState{Status: CheckPassing, Since: time.Now()},
		changes: make(chan CheckState, changesBuffer),
	}
	h.ctx, h.cancel = context.WithCancel(context.Background())
	if h.check != nil {
		if h.check.check == nil {
			h.cancel()
			return nil, api.Errorf(api.CodeValidation, "WithCheck was given no check")
		}
		// Registered only once the check passes; a mistyped service name
		// is still an error now rather than a registration failing forever.
		if _, err := c.Instances(ctx, service); err != nil {
			h.cancel()
			return nil, err
		}
		h.state = CheckState{Status: CheckUnknown, Since: time.Now()}
		go h.runChecked(h.check)
		return h, nil
	}
	first := h.send
	if c.sec.token != "" {
		// With a token, register over HTTP: a token that may not write this
		// service gets its 403 at once, where NATS only reports a
		// permissions violation apart from the request, which then waits
		// out its timeout.
		first = func(ctx context.Context, in *api.Instance, o retryOpts, _ bool) error { return h.sendHTTP(ctx, in, o) }
	}
	if err := first(ctx, in, retryOpts{}, true); err != nil {
		h.cancel()
		return nil, err
	}
	if c.nats.enabled && h.Instance().Index == 0 {
		// A NATS answer carries no index: learn it with one HTTP heartbeat.
		_ = h.sendHTTP(ctx, in, retryOpts{onePass: true, attemptTimeout: h.attemptTimeout()})
	}
	h.mu.Lock()
	h.lastOK = time.Now()
	h.mu.Unlock()
	go h.run()
	return h, nil
}

func (h *Heartbeater) path() string {
	return servicePath(h.service) + "/instances/" + url.PathEscape(h.id)
}

// Service is the service the instance is registered in.
func (h *Heartbeater) Service() string { return h.service }

// ID is the instance's id.
func (h *Heartbeater) ID() string { return h.id }

// Instance returns the registered instance as last confirmed by a server,
// with its index (its age; the fencing token when it leads). Over NATS,
// where the answer carries no index, the index is the one learned over
// HTTP at registration.
func (h *Heartbeater) Instance() *api.Instance {
	h.mu.Lock()
	defer h.mu.Unlock()
	in := *h.inst
	in.Meta = maps.Clone(in.Meta)
	return &in
}

// Err is non-nil while the heartbeats have been failing for longer than the
// TTL (the server has probably expired the instance); it is nil again after
// a heartbeat succeeds.
func (h *Heartbeater) Err() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.err
}

// SetMeta replaces the instance's meta and sends it at once (retried within
// ctx); later heartbeats carry it too, even if this send fails.
func (h *Heartbeater) SetMeta(ctx context.Context, meta map[string]string) error {
	select {
	case <-h.stop:
		return api.Errorf(api.CodeValidation, "heartbeater of %s/%s is stopped", h.service, h.id)
	default:
	}
	h.sendMu.Lock()
	defer h.sendMu.Unlock()
	h.mu.Lock()
	// A checked instance that is not registered gets its new meta sent
	// with its registration.
	unregistered := h.check != nil && !h.registered
	in := *h.inst
	in.Meta = maps.Clone(meta)
	check := in
	if err := api.PrepareInstance(&check, in.ID); err != nil {
		h.mu.Unlock()
		return err
	}
	in.Meta = check.Meta
	h.inst = &in
	h.mu.Unlock()
	if unregistered {
		return nil
	}
	// Each attempt is bounded as a heartbeat's is: this send holds sendMu,
	// and a server that hangs must not hold the heartbeats back with it.
	return h.send(ctx, &in, retryOpts{attemptTimeout: h.attemptTimeout()}, true)
}

// Stop stops the heartbeats without deregistering: the server expires the
// instance after its TTL. Close still deregisters after Stop.
func (h *Heartbeater) Stop() {
	h.stopOnce.Do(func() {
		close(h.stop)
		h.cancel()
		<-h.done
	})
}

// Close stops the heartbeats and deregisters the instance (retried across
// the servers for up to the client's retry timeout). An instance already
// gone is no error.
func (h *Heartbeater) Close() error {
	h.closeOnce.Do(func() {
		h.Stop()
		ctx, cancel := context.WithTimeout(context.Background(), h.c.retryTimeout)
		defer cancel()
		h.sendMu.Lock()
		defer h.sendMu.Unlock()
		_, err := h.c.do(ctx, retryOpts{}, &request{method: "DELETE", path: h.path()}, nil)
		if IsNotFound(err) {
			err = nil
		}
		h.closeErr = err
	})
	return h.closeErr
}

// interval is the wait before the next heartbeat after a success.
func (h *Heartbeater) interval() time.Duration {
	d := h.ttl/2 - rand.N(h.ttl/10+1)
	return max(d, 10*time.Millisecond)
}

// retryDelay is the wait before the next attempt after a failure.
func (h *Heartbeater) retryDelay() time.Duration {
	lo, hi := 200*time.Millisecond, 500*time.Millisecond
	if hi > h.ttl/4 {
		hi = max(h.ttl/4, 20*time.Millisecond)
		lo = hi / 2
	}
	return lo + rand.N(hi-lo)
}

// attemptTimeout bounds one heartbeat request to one server.
func (h *Heartbeater) attemptTimeout() time.Duration {
	return min(max(h.ttl/4, 250*time.Millisecond), 5*time.Second)
}

func (h *Heartbeater) run() {
	defer close(h.done)
	defer close(h.changes)
	t := time.NewTimer(h.interval())
	defer t.Stop()
	for {
		select {
		case <-h.stop:
			return
		case <-t.C:
		}
		err := h.beat()
		select {
		case <-h.stop:
			return
		default:
		}
		if err == nil {
			t.Reset(h.interval())
			continue
		}
		h.failed(err)
		t.Reset(h.retryDelay())
	}
}

// beat sends one heartbeat: one pass over the servers.
func (h *Heartbeater) beat() error {
	h.sendMu.Lock()
	defer h.sendMu.Unlock()
	h.mu.Lock()
	in := h.inst
	confirm := time.Since(h.lastConfirmed) >= h.ttl/2
	h.mu.Unlock()
	return h.send(h.ctx, in, retryOpts{onePass: true, attemptTimeout: h.attemptTimeout()}, confirm)
}

// send sends in: over NATS when the client uses it and is connected
// (published, or as a request when confirm is set), else, or when NATS
// fails, over HTTP.
func (h *Heartbeater) send(ctx context.Context, in *api.Instance, o retryOpts, confirm bool) error {
	if h.c.nats.enabled {
		if nc := h.c.natsConn(); nc != nil && nc.IsConnected() {
			err := h.sendNATS(ctx, nc, in, confirm, o)
			if err == nil {
				h.succeeded(nil, confirm)
				return nil
			}
			var ae *api.Error
			if errors.As(err, &ae) && !ae.Retry {
				return err // the server refused it: HTTP would too
			}
		}
	}
	return h.sendHTTP(ctx, in, o)
}

func (h *Heartbeater) sendHTTP(ctx context.Context, in *api.Instance, o retryOpts) error {
	body, err := jsonBody(in)
	if err != nil {
		return err
	}
	var stored api.Instance
	if _, err := h.c.do(ctx, o, &request{method: "PUT", path: h.path(), body: body}, &stored); err != nil {
		return err
	}
	h.succeeded(&stored, true)
	return nil
}

// succeeded records a heartbeat that went out (confirmed or not) and, with
// stored, the server's copy of the instance.
func (h *Heartbeater) succeeded(stored *api.Instance, confirmed bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	now := time.Now()
	h.lastOK = now
	if confirmed {
		h.lastConfirmed = now
	}
	h.err = nil
	if stored != nil && stored.SameRegistration(h.inst) {
		h.inst = stored
	}
}

// failed records a failed attempt; once failures have lasted longer than
// the TTL, Err reports it and OnError is called.
func (h *Heartbeater) failed(err error) {
	h.mu.Lock()
	since := time.Since(h.lastOK)
	var fire func(error)
	var herr error
	if since > h.ttl && h.err == nil {
		e := api.AsError(err)
		herr = &api.Error{Code: e.Code, Retry: e.Retry, Message: fmt.Sprintf(
			"heartbeats of instance %s of service %s have failed for %v, longer than the TTL %v: %s",
			h.id, h.service, since.Round(time.Millisecond), h.ttl, e.Message)}
		h.err = herr
		fire = h.onError
	}
	h.mu.Unlock()
	if fire != nil {
		go fire(herr)
	}
}
