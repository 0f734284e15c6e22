package fsm

import (
	"encoding/json"
	"sort"
	"sync"
	"sync/atomic"

	"github.com/discoverd/discoverd/api"
)

// Sink receives the events of each applied entry, in log order. It is called
// with the FSM's write lock held, so it must not block and must not call back
// into the FSM. The slice is reused after the call returns; the instances and
// meta the events point to are never modified and may be kept.
type Sink func(events []api.Event)

// Result is what Apply returns for one entry.
type Result struct {
	// Index is the revision of the change: the Raft index of the entry
	// unless batches put revisions ahead of the log (see batch.go). For a
	// batch it is the revision of its last registration.
	Index uint64
	// Instance is the stored instance after an add (with its index).
	Instance *api.Instance
	// Meta is the stored meta after a meta write.
	Meta *api.ServiceMeta
	// Expired is how many instances an expire command removed: the leader
	// counts its expiries from this, as instances re-registered or removed
	// since its check are skipped.
	Expired int
	// Err is a typed *api.Error when the command was rejected; a rejected
	// command changes nothing.
	Err error
	// Batch holds the result of each registration of a CmdAddInstances
	// entry, in order, each with its own revision and error.
	Batch []Result
}

// FSM is discoverd's replicated state: services, their instances, leaders and
// meta, and the addresses nodes announce. It is deterministic: the same log
// gives the same state and the same events on every node.
type FSM struct {
	mu       sync.RWMutex
	services map[string]*service
	nodes    map[string]api.NodeInfo
	// applied is the revision of the last change applied (see batch.go),
	// raftIndex the Raft index of the last entry.
	applied   uint64
	raftIndex uint64
	// appliedPub is applied, published once an entry's changes are complete,
	// so a reader who sees index N in it then reads state at least at N.
	appliedPub atomic.Uint64
	sink       Sink
	// events is reused across applies: Apply never allocates a slice of its own
	// for the events of an entry.
	events []api.Event
}

// New returns an empty state machine that reports events to sink (nil for none).
func New(sink Sink) *FSM {
	return &FSM{
		services: make(map[string]*service),
		nodes:    make(map[string]api.NodeInfo),
		sink:     sink,
	}
}

// ApplyCommand applies one encoded command at a Raft index. Apply (the
// raft.FSM method) calls it; tests call it directly.
func (f *FSM) ApplyCommand(raftIndex uint64, data []byte) *Result {
	f.mu.Lock()
	defer f.mu.Unlock()
	index := f.revision(raftIndex)
	res := &Result{Index: index}
	f.applied = max(f.applied, index)
	f.raftIndex = max(f.raftIndex, raftIndex)
	f.events = f.events[:0]
	defer func() { f.appliedPub.Store(f.applied) }()
	if len(data) == 0 {
		res.Err = api.Errorf(api.CodeValidation, "empty command")
		return res
	}
	body := data[1:]
	switch CommandType(data[0]) {
	case CmdAddService:
		var c AddService
		if res.Err = decode(body, &c); res.Err == nil {
			res.Err = f.addService(&c)
		}
	case CmdRemoveService:
		var c RemoveService
		if res.Err = decode(body, &c); res.Err == nil {
			res.Err = f.removeService(index, &c)
		}
	case CmdSetServiceMeta:
		var c SetServiceMeta
		if res.Err = decode(body, &c); res.Err == nil {
			res.Meta, res.Err = f.setServiceMeta(index, &c)
		}
	case CmdSetLeader:
		var c SetLeader
		if res.Err = decode(body, &c); res.Err == nil {
			res.Err = f.setLeader(index, &c)
		}
	case CmdAddInstance:
		var c AddInstance
		if res.Err = decode(body, &c); res.Err == nil {
			var s *service
			if s, res.Err = f.service(c.Service); res.Err == nil {
				res.Instance, res.Err = f.addInstance(index, s, c.Instance)
			}
		}
	case CmdAddInstanceCompact:
		name, in, err := decodeAddInstance(body)
		if res.Err = err; err == nil {
			if s, ok := f.services[string(name)]; !ok {
				res.Err = notFound(string(name))
			} else {
				res.Instance, res.Err = f.addInstance(index, s, in)
			}
		}
	case CmdAddInstances:
		f.addInstances(index, body, res)
	case CmdRemoveInstance:
		var c RemoveInstance
		if res.Err = decode(body, &c); res.Err == nil {
			res.Err = f.removeInstance(index, &c)
		}
	case CmdExpireInstances:
		var c ExpireInstances
		if res.Err = decode(body, &c); res.Err == nil {
			res.Expired = f.expireInstances(index, &c)
		}
	case CmdSetNode:
		var c SetNode
		if res.Err = decode(body, &c); res.Err == nil {
			if c.Node.Addr == "" {
				res.Err = api.Errorf(api.CodeValidation, "node addr is empty")
			} else {
				f.nodes[c.Node.Addr] = c.Node
			}
		}
	case CmdRemoveNode:
		var c RemoveNode
		if res.Err = decode(body, &c); res.Err == nil {
			delete(f.nodes, c.Addr)
		}
	default:
		res.Err = api.Errorf(api.CodeValidation, "unknown command type %d", data[0])
	}
	f.flush()
	return res
}

// maxKeptEvents bounds the event buffer kept between entries: one entry
// that emitted more (a service of many instances removed) does not keep
// its buffer, nor the instances it pointed to, alive.
const maxKeptEvents = 1024

// flush hands the entry's events to the sink and empties the buffer, so
// that it holds no removed instance alive until it is next overwritten.
func (f *FSM) flush() {
	if len(f.events) > 0 && f.sink != nil {
		f.sink(f.events)
	}
	if cap(f.events) > maxKeptEvents {
		f.events = nil
	} else {
		clear(f.events)
		f.events = f.events[:0]
	}
}

func decode(body []byte, v any) error {
	if err := json.Unmarshal(body, v); err != nil {
		return api.Errorf(api.CodeValidation, "malformed command body: %v", err)
	}
	return nil
}

func (f *FSM) emit(ev api.Event) { f.events = append(f.events, ev) }

func (f *FSM) service(name string) (*service, error) {
	s, ok := f.services[name]
	if !ok {
		return nil, notFound(name)
	}
	return s, nil
}

func notFound(service string) error {
	return api.Errorf(api.CodeNotFound, "service %q does not exist", service)
}

func (f *FSM) addService(c *AddService) error {
	if err := api.ValidateServiceName(c.Service); err != nil {
		return err
	}
	if c.Config.LeaderType == "" {
		c.Config.LeaderType = api.LeaderTypeOldest
	}
	if err := api.ValidateLeaderType(c.Config.LeaderType); err != nil {
		return err
	}
	if _, ok := f.services[c.Service]; ok {
		return api.Errorf(api.CodeExists, "service %q already exists", c.Service)
	}
	f.services[c.Service] = newService(c.Service, c.Config)
	return nil
}

func (f *FSM) removeService(index uint64, c *RemoveService) error {
	s, err := f.service(c.Service)
	if err != nil {
		return err
	}
	hadLeader := s.leader() != nil
	for _, inst := range s.instances() {
		f.emit(api.Event{Service: s.name, Kind: api.EventDown, Instance: inst, Index: index})
	}
	if hadLeader {
		f.emit(api.Event{Service: s.name, Kind: api.EventLeader, Index: index})
	}
	delete(f.services, c.Service)
	return nil
}

func (f *FSM) setServiceMeta(index uint64, c *SetServiceMeta) (*api.ServiceMeta, error) {
	s, err := f.service(c.Service)
	if err != nil {
		return nil, err
	}
	if !json.Valid(c.Meta.Data) {
		return nil, api.Errorf(api.CodeValidation, "service meta data is not valid JSON")
	}
	switch {
	case s.meta == nil && c.Meta.Index != 0:
		return nil, api.Errorf(api.CodePreconditionFailed, "service %q has no meta; write it with index 0 to create it", c.Service)
	case s.meta != nil && c.Meta.Index == 0:
		return nil, api.Errorf(api.CodeExists, "service %q already has meta (index %d)", c.Service, s.meta.Index)
	case s.meta != nil && c.Meta.Index != s.meta.Index:
		return nil, api.Errorf(api.CodePreconditionFailed, "service %q meta index is %d, not %d", c.Service, s.meta.Index, c.Meta.Index)
	}
	meta := &api.ServiceMeta{Data: c.Meta.Data, Index: index}
	s.meta = meta
	f.emit(api.Event{Service: s.name, Kind: api.EventServiceMeta, ServiceMeta: meta, Index: index})
	return meta, nil
}

func (f *FSM) setLeader(index uint64, c *SetLeader) error {
	s, err := f.service(c.Service)
	if err != nil {
		return err
	}
	if s.config.LeaderType != api.LeaderTypeManual {
		return api.Errorf(api.CodeValidation, "service %q chooses its leader by %q; only a manual service takes a leader by hand", c.Service, s.config.LeaderType)
	}
	inst := s.get(c.ID)
	if inst == nil {
		return api.Errorf(api.CodeNotFound, "instance %q of service %q does not exist", c.ID, c.Service)
	}
	if s.manualLeader == c.ID {
		return nil
	}
	s.manualLeader = c.ID
	f.emit(api.Event{Service: s.name, Kind: api.EventLeader, Instance: inst, Index: index})
	return nil
}

// addInstance registers in (decoded from the entry, so owned by the state
// machine from here on) in s.
func (f *FSM) addInstance(index uint64, s *service, in api.Instance) (*api.Instance, error) {
	if err := api.PrepareInstance(&in, ""); err != nil {
		return nil, err
	}
	old := s.get(in.ID)
	if old != nil && old.SameRegistration(&in) {
		return old, nil
	}
	prevLeader := s.leader()
	inst := new(api.Instance)
	*inst = in
	kind := api.EventUp
	if old != nil {
		inst.Index = old.Index
		kind = api.EventUpdate
	} else {
		inst.Index = index
	}
	s.put(inst)
	f.emit(api.Event{Service: s.name, Kind: kind, Instance: inst, Index: index})
	f.leaderChange(s, prevLeader, index)
	return inst, nil
}

// leaderChange emits a leader event when the service's leader is no longer
// prev. An update of the leader instance itself is an update event, not a
// new leadership.
func (f *FSM) leaderChange(s *service, prev *api.Instance, index uint64) {
	cur := s.leader()
	if cur == nil && prev == nil {
		return
	}
	if cur != nil && prev != nil && cur.ID == prev.ID && cur.Index == prev.Index {
		return
	}
	f.emit(api.Event{Service: s.name, Kind: api.EventLeader, Instance: cur, Index: index})
}

func (f *FSM) removeInstance(index uint64, c *RemoveInstance) error {
	s, err := f.service(c.Service)
	if err != nil {
		return err
	}
	prevLeader := s.leader()
	inst := s.remove(c.ID)
	if inst == nil {
		return api.Errorf(api.CodeNotFound, "instance %q of service %q does not exist", c.ID, c.Service)
	}
	f.emit(api.Event{Service: s.name, Kind: api.EventDown, Instance: inst, Index: index})
	f.leaderChange(s, prevLeader, index)
	return nil
}

// expireInstances removes the instances that are still the registrations the
// expiry check saw. An instance already gone or registered anew since is
// skipped, not an error: the batch as a whole always applies. It returns how
// many it removed.
func (f *FSM) expireInstances(index uint64, c *ExpireInstances) int {
	prevLeaders := make(map[*service]*api.Instance)
	var touched []*service
	removed := 0
	for _, e := range c.Instances {
		s, ok := f.services[e.Service]
		if !ok {
			continue
		}
		inst := s.get(e.ID)
		if inst == nil || inst.Index != e.Index {
			continue
		}
		if _, seen := prevLeaders[s]; !seen {
			prevLeaders[s] = s.leader()
			touched = append(touched, s)
		}
		s.remove(e.ID)
		removed++
		f.emit(api.Event{Service: s.name, Kind: api.EventDown, Instance: inst, Index: index})
	}
	for _, s := range touched {
		f.leaderChange(s, prevLeaders[s], index)
	}
	return removed
}

// AppliedIndex is the index of the last entry applied (or restored). It
// takes no lock.
func (f *FSM) AppliedIndex() uint64 { return f.appliedPub.Load() }

// Size returns the number of services and of instances. It costs one step
// per service (each keeps its own count), not per instance, so it is cheap
// enough for a metrics scrape.
func (f *FSM) Size() (services, instances int) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	for _, s := range f.services {
		instances += s.len()
	}
	return len(f.services), instances
}

// Services returns the names of all services, sorted.
func (f *FSM) Services() []string {
	f.mu.RLock()
	defer f.mu.RUnlock()
	out := make([]string, 0, len(f.services))
	for name := range f.services {
		out = append(out, name)
	}
	sort.Strings(out)
	return out
}

// ServiceConfig returns a service's config.
func (f *FSM) ServiceConfig(name string) (api.ServiceConfig, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	s, err := f.service(name)
	if err != nil {
		return api.ServiceConfig{}, err
	}
	return s.config, nil
}

// Instances returns a service's instances in order of index. The instances
// are shared and must not be modified.
func (f *FSM) Instances(name string) ([]*api.Instance, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	s, err := f.service(name)
	if err != nil {
		return nil, err
	}
	return s.instances(), nil
}

// AppendInstances appends a service's instances, in order of index, to dst
// and returns it: a caller that reuses dst (the DNS server, per query) reads
// a service without allocating.
func (f *FSM) AppendInstances(dst []*api.Instance, name string) ([]*api.Instance, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	s, err := f.service(name)
	if err != nil {
		return dst, err
	}
	for _, inst := range s.order[s.head:] {
		if inst != nil {
			dst = append(dst, inst)
		}
	}
	return dst, nil
}

// Lookup returns one instance and the service's name as the state machine
// holds it, so a caller keeping the name does not keep its own copy. A nil
// instance with a nil error means the service exists and the instance does
// not.
func (f *FSM) Lookup(name, id string) (string, *api.Instance, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	s, err := f.service(name)
	if err != nil {
		return "", nil, err
	}
	return s.name, s.get(id), nil
}

// Instance returns one instance; a nil instance with a nil error means the
// service exists and the instance does not.
func (f *FSM) Instance(name, id string) (*api.Instance, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	s, err := f.service(name)
	if err != nil {
		return nil, err
	}
	return s.get(id), nil
}

// Leader returns a service's leader, nil when it has none.
func (f *FSM) Leader(name string) (*api.Instance, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	s, err := f.service(name)
	if err != nil {
		return nil, err
	}
	return s.leader(), nil
}

// ServiceMeta returns a service's meta, nil when it has none.
func (f *FSM) ServiceMeta(name string) (*api.ServiceMeta, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	s, err := f.service(name)
	if err != nil {
		return nil, err
	}
	return s.meta, nil
}

// Nodes returns every node's announcement, sorted by address.
func (f *FSM) Nodes() []api.NodeInfo {
	f.mu.RLock()
	defer f.mu.RUnlock()
	out := make([]api.NodeInfo, 0, len(f.nodes))
	for _, n := range f.nodes {
		out = append(out, n)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Addr < out[j].Addr })
	return out
}

// CurrentState returns a service's state as the events that open a stream:
// one up per instance (in order of index), then leader (when the service has
// a leader), then service_meta (when the service has meta), then current.
// The index of each is the applied index. A service that does not exist (yet)
// is described by current alone: a stream may be opened before the service
// is created, as Flynn's router does, and its events follow once it is.
//
// The prelude never holds a leader event without an instance nor a
// service_meta event without meta: Flynn's client dereferences both while it
// reconciles a reconnect. (A live change to "no leader" is still a leader
// event with no instance.)
//
// While it runs, call holds the read lock, so nothing is applied between the
// state read here and whatever call does with it: this is how a subscriber
// joins the event stream with no gap and no duplicate.
func (f *FSM) CurrentState(name string, kinds api.KindMask, call func(prelude []api.Event)) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	s, ok := f.services[name]
	if !ok {
		call([]api.Event{{Service: name, Kind: api.EventCurrent, Index: f.applied}})
		return
	}
	call(f.prelude(s, kinds))
}

func (f *FSM) prelude(s *service, kinds api.KindMask) []api.Event {
	var out []api.Event
	idx := f.applied
	if kinds.Has(api.EventUp) {
		out = make([]api.Event, 0, s.len()+3)
		for _, inst := range s.order[s.head:] {
			if inst != nil {
				out = append(out, api.Event{Service: s.name, Kind: api.EventUp, Instance: inst, Index: idx})
			}
		}
	}
	if kinds.Has(api.EventLeader) {
		if l := s.leader(); l != nil {
			out = append(out, api.Event{Service: s.name, Kind: api.EventLeader, Instance: l, Index: idx})
		}
	}
	if kinds.Has(api.EventServiceMeta) && s.meta != nil {
		out = append(out, api.Event{Service: s.name, Kind: api.EventServiceMeta, ServiceMeta: s.meta, Index: idx})
	}
	out = append(out, api.Event{Service: s.name, Kind: api.EventCurrent, Index: idx})
	return out
}

// LeaderEvents returns a leader event for every service, each at the applied
// index, read at one point of the log.
func (f *FSM) LeaderEvents() []api.Event {
	f.mu.RLock()
	defer f.mu.RUnlock()
	out := make([]api.Event, 0, len(f.services))
	for name, s := range f.services {
		out = append(out, api.Event{Service: name, Kind: api.EventLeader, Instance: s.leader(), Index: f.applied})
	}
	return out
}
