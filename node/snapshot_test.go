package node

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/discoverd/discoverd/api"
)

// TestRestoreGivesAFreshTTL restores a backup over a registry holding the
// same instance (heard from 30s ago) and one it lost: both get a full TTL
// from the restore.
func TestRestoreGivesAFreshTTL(t *testing.T) {
	n, err := New(Config{DataDir: t.TempDir(), Addr: "127.0.0.1:0", InstanceTTL: time.Minute, Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := waitIsLeader(ctx, n); err != nil {
		t.Fatal(err)
	}
	if _, err := n.AddService(ctx, "web", api.ServiceConfig{}); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"kept", "lost"} {
		if _, err := n.Heartbeat(ctx, "web", &api.Instance{ID: id, Addr: "10.0.0.1:80", Proto: "http"}); err != nil {
			t.Fatal(err)
		}
	}
	snap, err := n.SaveSnapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var file bytes.Buffer
	if _, err := snap.WriteTo(&file); err != nil {
		t.Fatal(err)
	}
	if _, err := n.Deregister(ctx, "web", "lost"); err != nil {
		t.Fatal(err)
	}
	n.heartbeats.touch(hbKey{"web", "kept"}, time.Now().Add(-30*time.Second).UnixNano())

	before := time.Now().UnixNano()
	if _, err := n.RestoreSnapshot(ctx, &file); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"kept", "lost"} {
		seen, ok := n.heartbeats.lastSeen(hbKey{"web", id})
		if !ok || seen < before {
			t.Errorf("%s: last heard at %v (present %v), before the restore at %v", id, time.Unix(0, seen), ok, time.Unix(0, before))
		}
	}
	if insts, _ := n.Instances("web"); len(insts) != 2 {
		t.Errorf("after the restore: %d instances, want 2", len(insts))
	}
}
