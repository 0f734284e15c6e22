package fsm

import (
	"bufio"
	"encoding/json"
	"io"
	"sort"
	"strconv"

	"github.com/discoverd/discoverd/api"
	"github.com/hashicorp/raft"
)

// snapshotState is the on-disk form of a snapshot.
type snapshotState struct {
	Index    uint64            `json:"index"`
	Services []snapshotService `json:"services"`
	Nodes    []api.NodeInfo    `json:"nodes,omitempty"`
}

type snapshotService struct {
	Name         string            `json:"name"`
	Config       api.ServiceConfig `json:"config"`
	Instances    []*api.Instance   `json:"instances"`
	ManualLeader string            `json:"manual_leader,omitempty"`
	Meta         *api.ServiceMeta  `json:"meta,omitempty"`
}

// Apply implements raft.FSM.
func (f *FSM) Apply(l *raft.Log) any {
	if l.Type != raft.LogCommand {
		return nil
	}
	return f.ApplyCommand(l.Index, l.Data)
}

// Snapshot implements raft.FSM. It copies only pointers under the lock (the
// instances themselves are immutable); encoding happens in Persist, while
// Apply goes on.
func (f *FSM) Snapshot() (raft.FSMSnapshot, error) {
	return f.capture(), nil
}

func (f *FSM) capture() *snapshotState {
	f.mu.RLock()
	defer f.mu.RUnlock()
	st := &snapshotState{Index: f.applied, Services: make([]snapshotService, 0, len(f.services))}
	for _, s := range f.services {
		st.Services = append(st.Services, snapshotService{
			Name:         s.name,
			Config:       s.config,
			Instances:    s.instances(),
			ManualLeader: s.manualLeader,
			Meta:         s.meta,
		})
	}
	sort.Slice(st.Services, func(i, j int) bool { return st.Services[i].Name < st.Services[j].Name })
	for _, n := range f.nodes {
		st.Nodes = append(st.Nodes, n)
	}
	sort.Slice(st.Nodes, func(i, j int) bool { return st.Nodes[i].Addr < st.Nodes[j].Addr })
	return st
}

// Persist implements raft.FSMSnapshot. It writes the JSON of the state
// (the same bytes as json.Encoder would) one instance at a time, so a
// snapshot of a big registry costs a small buffer rather than a copy of
// the whole encoding in memory.
func (st *snapshotState) Persist(sink raft.SnapshotSink) error {
	w := bufio.NewWriterSize(sink, persistBuffer)
	err := st.encode(w)
	if err == nil {
		err = w.Flush()
	}
	if err != nil {
		sink.Cancel()
		return err
	}
	return sink.Close()
}

const persistBuffer = 64 << 10

// encode writes st as json.Encoder.Encode would: the value, then a newline.
func (st *snapshotState) encode(w *bufio.Writer) error {
	b := make([]byte, 0, 512)
	b = append(b, `{"index":`...)
	b = strconv.AppendUint(b, st.Index, 10)
	b = append(b, `,"services":`...)
	if st.Services == nil {
		b = append(b, "null"...)
	} else {
		b = append(b, '[')
		for i := range st.Services {
			if i > 0 {
				b = append(b, ',')
			}
			var err error
			if b, err = st.Services[i].appendJSON(b, w); err != nil {
				return err
			}
		}
		b = append(b, ']')
	}
	if len(st.Nodes) > 0 {
		b = append(b, `,"nodes":`...)
		var err error
		if b, err = appendMarshal(b, st.Nodes); err != nil {
			return err
		}
	}
	b = append(b, "}\n"...)
	_, err := w.Write(b)
	return err
}

// appendJSON appends the JSON of one service to b, writing b out to w
// whenever it has grown past the buffer size.
func (ss *snapshotService) appendJSON(b []byte, w *bufio.Writer) ([]byte, error) {
	var err error
	b = append(b, `{"name":`...)
	if b, err = appendMarshal(b, ss.Name); err != nil {
		return b, err
	}
	b = append(b, `,"config":`...)
	if b, err = appendMarshal(b, ss.Config); err != nil {
		return b, err
	}
	b = append(b, `,"instances":`...)
	if ss.Instances == nil {
		b = append(b, "null"...)
	} else {
		b = append(b, '[')
		for i, inst := range ss.Instances {
			if i > 0 {
				b = append(b, ',')
			}
			b = api.AppendInstance(b, inst)
			if len(b) >= persistBuffer {
				if _, err := w.Write(b); err != nil {
					return b, err
				}
				b = b[:0]
			}
		}
		b = append(b, ']')
	}
	if ss.ManualLeader != "" {
		b = append(b, `,"manual_leader":`...)
		if b, err = appendMarshal(b, ss.ManualLeader); err != nil {
			return b, err
		}
	}
	if ss.Meta != nil {
		b = append(b, `,"meta":`...)
		if b, err = appendMarshal(b, ss.Meta); err != nil {
			return b, err
		}
	}
	return append(b, '}'), nil
}

func appendMarshal(b []byte, v any) ([]byte, error) {
	j, err := json.Marshal(v)
	if err != nil {
		return b, err
	}
	return append(b, j...), nil
}

// Release implements raft.FSMSnapshot.
func (st *snapshotState) Release() {}

// Restore implements raft.FSM. It replaces the whole state and emits the
// difference from the old state as events (downs, ups, updates, leader and
// meta changes) at the snapshot's index, so a subscriber never silently
// misses a change.
func (f *FSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	var st snapshotState
	if err := json.NewDecoder(rc).Decode(&st); err != nil {
		return err
	}
	return f.restore(&st)
}

func (f *FSM) restore(st *snapshotState) error {
	services := make(map[string]*service, len(st.Services))
	for _, ss := range st.Services {
		s := newService(ss.Name, ss.Config)
		sort.Slice(ss.Instances, func(i, j int) bool { return ss.Instances[i].Index < ss.Instances[j].Index })
		for _, inst := range ss.Instances {
			s.put(inst)
		}
		if ss.ManualLeader != "" && s.get(ss.ManualLeader) != nil {
			s.manualLeader = ss.ManualLeader
		}
		s.meta = ss.Meta
		services[ss.Name] = s
	}
	nodes := make(map[string]api.NodeInfo, len(st.Nodes))
	for _, n := range st.Nodes {
		nodes[n.Addr] = n
	}

	f.mu.Lock()
	defer f.mu.Unlock()
	f.events = f.events[:0]
	idx := st.Index
	names := make([]string, 0, len(f.services)+len(services))
	for name := range f.services {
		names = append(names, name)
	}
	for name := range services {
		if _, ok := f.services[name]; !ok {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	for _, name := range names {
		f.diff(name, f.services[name], services[name], idx)
	}
	f.services = services
	f.nodes = nodes
	f.applied = st.Index
	f.appliedPub.Store(st.Index)
	f.flush()
	return nil
}

// diff emits the events that turn old into cur (either may be nil).
func (f *FSM) diff(name string, old, cur *service, idx uint64) {
	var oldLeader, curLeader *api.Instance
	if old != nil {
		oldLeader = old.leader()
		for _, inst := range old.instances() {
			if cur == nil || cur.get(inst.ID) == nil {
				f.emit(api.Event{Service: name, Kind: api.EventDown, Instance: inst, Index: idx})
			}
		}
	}
	if cur != nil {
		curLeader = cur.leader()
		for _, inst := range cur.instances() {
			var prev *api.Instance
			if old != nil {
				prev = old.get(inst.ID)
			}
			switch {
			case prev == nil:
				f.emit(api.Event{Service: name, Kind: api.EventUp, Instance: inst, Index: idx})
			case prev.Index != inst.Index:
				// Removed and registered again while this node was behind.
				f.emit(api.Event{Service: name, Kind: api.EventDown, Instance: prev, Index: idx})
				f.emit(api.Event{Service: name, Kind: api.EventUp, Instance: inst, Index: idx})
			case !prev.SameRegistration(inst):
				f.emit(api.Event{Service: name, Kind: api.EventUpdate, Instance: inst, Index: idx})
			}
		}
	}
	switch {
	case oldLeader == nil && curLeader == nil:
	case oldLeader != nil && curLeader != nil && oldLeader.ID == curLeader.ID && oldLeader.Index == curLeader.Index:
	default:
		f.emit(api.Event{Service: name, Kind: api.EventLeader, Instance: curLeader, Index: idx})
	}
	if cur != nil && cur.meta != nil && (old == nil || old.meta == nil || old.meta.Index != cur.meta.Index) {
		f.emit(api.Event{Service: name, Kind: api.EventServiceMeta, ServiceMeta: cur.meta, Index: idx})
	}
}
