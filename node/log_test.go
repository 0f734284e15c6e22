package node

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/rs/zerolog"
)

func TestRaftLogLevelsAndFields(t *testing.T) {
	for _, tc := range []struct {
		name      string
		line      string
		wantLevel string
		wantField string
	}{
		{"first election is info", `{"@level":"warn","@message":"heartbeat timeout reached, starting election","@module":"raft","last-leader-addr":"","last-leader-id":""}`, "info", "last_leader_addr"},
		{"a lost leader is a warning", `{"@level":"warn","@message":"heartbeat timeout reached, starting election","@module":"raft","last-leader-addr":"10.0.0.1:1111","last-leader-id":"10.0.0.1:1111"}`, "warn", "last_leader_addr"},
		{"info is debug", `{"@level":"info","@message":"entering follower state","@module":"raft","follower":"x","leader-address":""}`, "debug", "leader_address"},
		{"errors stay errors", `{"@level":"error","@message":"failed to appendEntries","@module":"raft","peer":"x","error":"boom"}`, "error", "peer"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			w := &hclogWriter{log: zerolog.New(&buf)}
			w.Write([]byte(tc.line + "\n"))
			var got map[string]any
			if err := json.Unmarshal(buf.Bytes(), &got); err != nil {
				t.Fatalf("%v: %q", err, buf.String())
			}
			if got["level"] != tc.wantLevel {
				t.Errorf("level %v, want %s", got["level"], tc.wantLevel)
			}
			if _, ok := got[tc.wantField]; !ok {
				t.Errorf("no field %s in %v", tc.wantField, got)
			}
		})
	}
}
