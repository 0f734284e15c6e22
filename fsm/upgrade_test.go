package fsm

import (
	"bytes"
	"testing"

	"github.com/discoverd/discoverd/api"
)

func TestForMaxType(t *testing.T) {
	inst := &api.Instance{ID: "a", Addr: "10.0.0.1:80", Proto: "http", Meta: map[string]string{"k": "v"}}
	compact := EncodeAddInstance("web", inst)
	jsonForm := MustEncode(CmdAddInstance, &AddInstance{Service: "web", Instance: *inst})
	for _, tc := range []struct {
		name    string
		cmd     []byte
		max     CommandType
		want    []byte
		wantErr api.ErrorCode
	}{
		{"compact for a new cluster", compact, MaxCommandType, compact, ""},
		{"compact for an old cluster", compact, BaselineCommandType, jsonForm, ""},
		{"json for an old cluster", jsonForm, BaselineCommandType, jsonForm, ""},
		{"unknown type", []byte{200, '{', '}'}, MaxCommandType, nil, api.CodeValidation},
		{"a type with no older form", compact, CmdSetLeader, nil, api.CodeUnavailable},
		{"a batch for a cluster that does not apply batches", AppendAddInstances(nil, [][]byte{compact}), CmdAddInstanceCompact, nil, api.CodeUnavailable},
		{"a batch for a new cluster", AppendAddInstances(nil, [][]byte{compact}), MaxCommandType, AppendAddInstances(nil, [][]byte{compact}), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ForMaxType(tc.cmd, tc.max)
			if tc.wantErr != "" {
				if !api.IsCode(err, tc.wantErr) {
					t.Fatalf("err %v, want %s", err, tc.wantErr)
				}
				return
			}
			if err != nil || !bytes.Equal(got, tc.want) {
				t.Fatalf("ForMaxType = %q, %v; want %q", got, err, tc.want)
			}
		})
	}
	// Both forms apply to the same state.
	a, b := New(nil), New(nil)
	for _, f := range []*FSM{a, b} {
		f.ApplyCommand(1, MustEncode(CmdAddService, &AddService{Service: "web"}))
	}
	old, _ := ForMaxType(compact, BaselineCommandType)
	ra, rb := a.ApplyCommand(2, compact), b.ApplyCommand(2, old)
	if ra.Err != nil || rb.Err != nil || !ra.Instance.SameRegistration(rb.Instance) || ra.Instance.Index != rb.Instance.Index {
		t.Fatalf("compact gave %+v, the older form %+v", ra, rb)
	}
}
