package fsm

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"strconv"

	"github.com/discoverd/discoverd/api"
)

// Backup is the registry at one applied index, for a backup (GET
// /raft/snapshot) or a restore of one (PUT /raft/snapshot). It holds the
// state machine's immutable instances, so taking one costs pointer copies
// under the read lock, and writing it out holds no lock at all: heartbeats
// and writes go on meanwhile.
type Backup struct {
	st *snapshotState
}

// Backup captures the registry (services, instances, leaders, meta). The
// node table is left out: it describes the cluster the backup came from,
// not the registry.
func (f *FSM) Backup() *Backup {
	st := f.capture()
	st.Nodes = nil
	return &Backup{st: st}
}

// Index is the Raft index of the registry.
func (b *Backup) Index() uint64 { return b.st.Index }

// Size returns the number of services and of instances.
func (b *Backup) Size() (services, instances int) {
	for i := range b.st.Services {
		instances += len(b.st.Services[i].Instances)
	}
	return len(b.st.Services), instances
}

// WriteRegistry writes the registry as JSON (the Raft snapshot's form), one
// line ending in a newline.
func (b *Backup) WriteRegistry(w io.Writer) error {
	bw := bufio.NewWriterSize(w, persistBuffer)
	if err := b.st.encode(bw); err != nil {
		return err
	}
	return bw.Flush()
}

// ParseBackup decodes and checks a registry written by WriteRegistry. Every
// name, instance and meta is validated as a write would be, so that a
// restore of it cannot fail halfway: an error is a validation error saying
// what is wrong.
func ParseBackup(registry []byte) (*Backup, error) {
	dec := json.NewDecoder(bytes.NewReader(registry))
	dec.DisallowUnknownFields()
	var st snapshotState
	if err := dec.Decode(&st); err != nil {
		return nil, api.Errorf(api.CodeValidation, "malformed registry: %v", err)
	}
	if dec.More() {
		return nil, api.Errorf(api.CodeValidation, "malformed registry: data after the registry")
	}
	st.Nodes = nil
	seen := make(map[string]bool, len(st.Services))
	for i := range st.Services {
		ss := &st.Services[i]
		if err := api.ValidateServiceName(ss.Name); err != nil {
			return nil, err
		}
		if seen[ss.Name] {
			return nil, api.Errorf(api.CodeValidation, "service %q appears twice", ss.Name)
		}
		seen[ss.Name] = true
		if ss.Config.LeaderType == "" {
			ss.Config.LeaderType = api.LeaderTypeOldest
		}
		if err := api.ValidateLeaderType(ss.Config.LeaderType); err != nil {
			return nil, err
		}
		ids := make(map[string]bool, len(ss.Instances))
		for _, inst := range ss.Instances {
			if inst == nil {
				return nil, api.Errorf(api.CodeValidation, "service %q has a null instance", ss.Name)
			}
			idx := inst.Index
			if err := api.PrepareInstance(inst, ""); err != nil {
				return nil, api.Errorf(api.CodeValidation, "service %q: instance %q: %s", ss.Name, inst.ID, api.AsError(err).Message)
			}
			inst.Index = idx
			if idx == 0 {
				return nil, api.Errorf(api.CodeValidation, "service %q: instance %q has no index", ss.Name, inst.ID)
			}
			if ids[inst.ID] {
				return nil, api.Errorf(api.CodeValidation, "service %q: instance %q appears twice", ss.Name, inst.ID)
			}
			ids[inst.ID] = true
		}
		if ss.ManualLeader != "" && !ids[ss.ManualLeader] {
			return nil, api.Errorf(api.CodeValidation, "service %q: its leader %q is not one of its instances", ss.Name, ss.ManualLeader)
		}
		if m := ss.Meta; m != nil && (m.Index == 0 || !json.Valid(m.Data)) {
			return nil, api.Errorf(api.CodeValidation, "service %q: its meta has no index or is not valid JSON", ss.Name)
		}
	}
	return &Backup{st: &st}, nil
}

// indexField is how a restore image starts; the index follows, padded to
// indexWidth bytes.
const (
	indexField = `{"index":`
	indexWidth = 20 // the digits of the largest uint64
)

// RestoreImage encodes the backup as a Raft snapshot of the state machine
// with the given node table (the cluster's own, which the restore keeps) and
// room for an index that SetImageIndex fills in: a user restore in Raft
// picks the snapshot's index only once it runs, but needs the size before.
func (b *Backup) RestoreImage(nodes []api.NodeInfo) ([]byte, error) {
	st := *b.st
	st.Index = 0
	st.Nodes = nodes
	var buf bytes.Buffer
	bw := bufio.NewWriterSize(&buf, persistBuffer)
	if err := st.encode(bw); err != nil {
		return nil, err
	}
	if err := bw.Flush(); err != nil {
		return nil, err
	}
	rest := buf.Bytes()[len(indexField)+1:] // after `{"index":0`
	img := make([]byte, 0, len(indexField)+indexWidth+len(rest))
	img = append(img, indexField...)
	img = append(img, bytes.Repeat([]byte{' '}, indexWidth)...)
	img = append(img, rest...)
	SetImageIndex(img, 0)
	return img, nil
}

// SetImageIndex writes index into an image of RestoreImage (JSON allows the
// spaces that pad it).
func SetImageIndex(img []byte, index uint64) {
	field := img[len(indexField) : len(indexField)+indexWidth]
	for i := range field {
		field[i] = ' '
	}
	copy(field, strconv.AppendUint(nil, index, 10))
}
