package node

import (
	"context"
	"testing"
	"time"

	"github.com/discoverd/discoverd/api"
)

// A single voter has no follower to tell the commit index: its writes must
// not cost it a barrier (a disk write) each.
func TestCommitNudgeIsOffOnASingleVoter(t *testing.T) {
	n := startNode(t, t.TempDir(), "127.0.0.1:0")
	v := n.v.Load()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, name := range []string{"a", "b", "c"} {
		if _, err := n.AddService(ctx, name, api.ServiceConfig{}); err != nil {
			t.Fatal(err)
		}
		// The state machine applied the write before it was answered, so
		// a nudge would already be pending or issued.
		if v.nudge.dirty.Load() || v.nudge.issued.Load() != 0 {
			t.Fatalf("single voter: nudge pending %v, %d issued after writing service %s", v.nudge.dirty.Load(), v.nudge.issued.Load(), name)
		}
	}
}
