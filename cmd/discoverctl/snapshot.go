package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"github.com/discoverd/discoverd/snapshot"
)

// cmdSnapshotSave writes a backup of the registry to a file. It lands under
// a temporary name and is renamed only once whole and verified, so an
// interrupted save never leaves a file that looks like a backup.
func cmdSnapshotSave(e *env, args []string) error {
	path := args[0]
	data, err := e.c.SaveSnapshot(e.ctx)
	if err != nil {
		return err
	}
	f, err := snapshot.Parse(data)
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".*.tmp")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	if e.json {
		return printJSON(e.stdout, summary(path, f))
	}
	fmt.Fprintf(e.stdout, "saved %s: index %d, %d services, %d instances, %d bytes, sha256 %s\n",
		path, f.Header.Index, f.Header.Services, f.Header.Instances, f.Size, f.Checksum)
	return nil
}

// cmdSnapshotRestore replaces the cluster's registry with a backup. The
// file is checked here first, so a damaged one is named before anything is
// sent; the server checks it again.
func cmdSnapshotRestore(e *env, args []string) error {
	data, f, err := readSnapshot(args[0])
	if err != nil {
		return err
	}
	idx, err := e.c.RestoreSnapshot(e.ctx, data)
	if err != nil {
		return err
	}
	if e.json {
		return printJSON(e.stdout, map[string]any{"file": args[0], "restored_index": idx, "header": f.Header})
	}
	fmt.Fprintf(e.stdout, "restored %s (%d services, %d instances, taken at index %d) at index %d\n",
		args[0], f.Header.Services, f.Header.Instances, f.Header.Index, idx)
	return nil
}

type snapshotSummary struct {
	File      string            `json:"file"`
	Header    snapshot.Header   `json:"header"`
	Size      int64             `json:"size"`
	Checksum  string            `json:"sha256"`
	Services  []snapshotService `json:"services,omitempty"`
	Instances int               `json:"instances"`
	Index     uint64            `json:"index"`
}

type snapshotService struct {
	Name       string `json:"name"`
	LeaderType string `json:"leader_type"`
	Instances  int    `json:"instances"`
	Meta       bool   `json:"meta"`
}

func summary(path string, f *snapshot.File) snapshotSummary {
	return snapshotSummary{File: path, Header: f.Header, Size: f.Size, Checksum: f.Checksum,
		Instances: f.Header.Instances, Index: f.Header.Index}
}

// readSnapshot reads and checks the backup at path.
func readSnapshot(path string) ([]byte, *snapshot.File, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, err
	}
	f, err := snapshot.Parse(data)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %s", path, errMessage(err))
	}
	return data, f, nil
}

// cmdSnapshotInspect verifies a backup and describes it. It needs no
// server.
func cmdSnapshotInspect(e *env, args []string) error {
	_, f, err := readSnapshot(args[0])
	if err != nil {
		return err
	}
	reg, err := f.DecodeRegistry()
	if err != nil {
		return fmt.Errorf("%s: %s", args[0], errMessage(err))
	}
	s := summary(args[0], f)
	s.Index, s.Instances = reg.Index, 0
	for _, svc := range reg.Services {
		s.Services = append(s.Services, snapshotService{Name: svc.Name, LeaderType: string(svc.Config.LeaderType),
			Instances: len(svc.Instances), Meta: svc.Meta != nil})
		s.Instances += len(svc.Instances)
	}
	if e.json {
		return printJSON(e.stdout, s)
	}
	rows := make([][]string, 0, len(s.Services))
	for _, svc := range s.Services {
		meta := "-"
		if svc.Meta {
			meta = "yes"
		}
		rows = append(rows, []string{svc.Name, strconv.Itoa(svc.Instances), svc.LeaderType, meta})
	}
	if err := table(e.stdout, []string{"SERVICE", "INSTANCES", "LEADER_TYPE", "META"}, rows); err != nil {
		return err
	}
	fmt.Fprintln(e.stdout)
	return table(e.stdout, []string{"FIELD", "VALUE"}, [][]string{
		{"services", strconv.Itoa(len(s.Services))},
		{"instances", strconv.Itoa(s.Instances)},
		{"index", strconv.FormatUint(s.Index, 10)},
		{"size", strconv.FormatInt(s.Size, 10) + " bytes"},
		{"sha256", s.Checksum},
		{"written_by", "discoverd " + f.Header.Version},
		{"created", f.Header.Created.Format("2006-01-02T15:04:05Z07:00")},
	})
}
