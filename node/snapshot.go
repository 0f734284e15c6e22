package node

import (
	"bytes"
	"context"
	"errors"

	"io"
	"net/http"
	"time"

	"github.com/discoverd/discoverd/api"
	"github.com/discoverd/discoverd/fsm"
	"github.com/discoverd/discoverd/internal/version"
	"github.com/discoverd/discoverd/snapshot"
	"github.com/hashicorp/raft"
)

// SnapshotPath is the route of backups: GET streams one, PUT restores one.
const SnapshotPath = "/raft/snapshot"

// restoreTimeout bounds a restore whose context has no deadline.
const restoreTimeout = time.Minute

// SaveSnapshot returns a backup of the registry holding every write
// acknowledged before the call, to be written out with WriteTo in the
// snapshot file format. It is taken at once (pointer copies under the
// state machine's read lock); writing it holds no lock, so heartbeats and
// writes go on while a large registry streams.
func (n *Node) SaveSnapshot(ctx context.Context) (io.WriterTo, error) {
	v, err := n.readyVoter()
	if err != nil {
		return nil, err
	}
	if err := n.Consistent(ctx); err != nil {
		return nil, err
	}
	return snapshotFile{v.fsm.Backup()}, nil
}

type snapshotFile struct{ b *fsm.Backup }

func (s snapshotFile) WriteTo(w io.Writer) (int64, error) {
	cw := &countingWriter{w: w}
	services, instances := s.b.Size()
	sw, err := snapshot.NewWriter(cw, snapshot.Header{
		Version:   version.Get(),
		Created:   time.Now().UTC(),
		Index:     s.b.Index(),
		Services:  services,
		Instances: instances,
	})
	if err == nil {
		err = s.b.WriteRegistry(sw)
	}
	if err == nil {
		err = sw.Close()
	}
	return cw.n, err
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// RestoreSnapshot replaces the registry of the whole cluster with the
// snapshot file read from r, and returns the Raft index it was restored
// at. The file is verified (checksum, format, every service and instance)
// before anything changes: a damaged or foreign file is a validation error
// and leaves the state as it was. The restore goes through the Raft leader
// (a follower forwards the file to it) as a user restore, which every voter
// then installs. The cluster keeps its own node table; restored instances
// get a fresh TTL; every change is an event to watchers.
func (n *Node) RestoreSnapshot(ctx context.Context, r io.Reader) (uint64, error) {
	data, err := io.ReadAll(io.LimitReader(r, snapshot.MaxBytes+1))
	if err != nil {
		return 0, api.Errorf(api.CodeValidation, "reading the snapshot: %v", err)
	}
	if len(data) > snapshot.MaxBytes {
		return 0, api.Errorf(api.CodeValidation, "the snapshot is larger than %d bytes", snapshot.MaxBytes)
	}
	file, err := snapshot.Parse(data)
	if err != nil {
		return 0, err
	}
	backup, err := fsm.ParseBackup(file.Registry)
	if err != nil {
		return 0, api.Errorf(api.CodeValidation, "not a valid discoverd snapshot: %s", api.AsError(err).Message)
	}
	v, err := n.voter()
	if err != nil {
		return 0, err
	}
	leader, isLeader := n.awaitLeader(ctx, v)
	if !isLeader {
		if leader == "" {
			return 0, n.noLeaderError()
		}
		var out api.AppliedCommand
		if err := n.fwd.do(ctx, http.MethodPut, leader, SnapshotPath, data, &out); err != nil {
			return 0, err
		}
		v.waitApplied(ctx, out.Index)
		return out.Index, nil
	}
	img, err := backup.RestoreImage(v.fsm.Nodes())
	if err != nil {
		return 0, err
	}
	timeout := restoreTimeout
	if dl, ok := ctx.Deadline(); ok {
		timeout = time.Until(dl)
	}
	ri := &restoreImage{img: img}
	// Raft restores at an index past both its log and the backup's, so
	// that the restored instances are older than anything written next;
	// and past the state machine's revision, which batches of
	// registrations may have put ahead of the log, so that indexes never
	// go back.
	meta := &raft.SnapshotMeta{Version: raft.SnapshotVersionMax, Index: max(backup.Index(), v.fsm.AppliedIndex()), Size: int64(len(img))}
	if err := v.raft.Restore(meta, ri, timeout); err != nil {
		return 0, raftError(err)
	}
	services, instances := backup.Size()
	n.log.Info().Uint64("index", ri.index).Int("services", services).Int("instances", instances).
		Uint64("backup_index", file.Header.Index).Msg("restored the registry from a snapshot")
	return ri.index, nil
}

// restoreImage hands the state machine's snapshot to Raft's user restore.
// Raft copies it into a snapshot sink it creates at the index it chose;
// WriteTo (which io.Copy prefers to Read) writes that index into the image
// first, so the state machine's index after the restore is Raft's.
type restoreImage struct {
	img   []byte
	index uint64
}

var errRestoreSink = errors.New("restore image copied to a sink that does not say its index")

func (ri *restoreImage) Read([]byte) (int, error) { return 0, errRestoreSink }

func (ri *restoreImage) WriteTo(w io.Writer) (int64, error) {
	s, ok := w.(*indexedSink)
	if !ok {
		return 0, errRestoreSink
	}
	ri.index = s.index
	fsm.SetImageIndex(ri.img, s.index)
	n, err := io.Copy(s, bytes.NewReader(ri.img))
	return n, err
}

// indexedStore is the file snapshot store with sinks that remember the
// index they were created at (see restoreImage).
type indexedStore struct{ *raft.FileSnapshotStore }

func (s indexedStore) Create(version raft.SnapshotVersion, index, term uint64, configuration raft.Configuration,
	configurationIndex uint64, trans raft.Transport) (raft.SnapshotSink, error) {
	sink, err := s.FileSnapshotStore.Create(version, index, term, configuration, configurationIndex, trans)
	if err != nil {
		return nil, err
	}
	return &indexedSink{SnapshotSink: sink, index: index}, nil
}

type indexedSink struct {
	raft.SnapshotSink
	index uint64
}

// Write hides the sink's own ReadFrom (none today) from io.Copy.
func (s *indexedSink) Write(p []byte) (int, error) { return s.SnapshotSink.Write(p) }
