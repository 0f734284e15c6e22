package httpapi

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/discoverd/discoverd/api"
)

// The hand-written encoders must write exactly what encoding/json writes.
func TestEncodersMatchEncodingJSON(t *testing.T) {
	strs := []string{
		"", "plain", `quote " backslash \ slash /`, "ctl \x00\x01\x1f\b\f\n\r\t",
		"html <a href='x'>&amp;</a>", "utf8 é ☃ 𝄞", "bad utf8 \xff\xfe x \xc3", "seps \u2028 \u2029",
		strings.Repeat("long ", 300),
	}
	var insts []*api.Instance
	for i, s := range strs {
		meta := map[string]string{s: s, "k" + s: "v", "z": s}
		if i%3 == 0 {
			meta = nil
		}
		insts = append(insts, &api.Instance{ID: s, Addr: s + ":1", Proto: s, Meta: meta, Index: uint64(i) * 1e17})
	}

	same := func(what string, got []byte, v any) {
		t.Helper()
		want, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != string(want) {
			t.Errorf("%s:\n got %s\nwant %s", what, got, want)
		}
	}

	metas := []*api.ServiceMeta{
		{Data: json.RawMessage(`{"a": [1, 2,
			3], "b": "<&>"}`), Index: 7},
		{Data: json.RawMessage(`null`), Index: 1},
		{Index: 2},
	}
	kinds := append([]api.EventKind{"odd\"kind"}, api.EventKinds...)
	for i, k := range kinds {
		ev := &api.Event{Service: strs[i%len(strs)], Kind: k, Index: uint64(i)}
		if i%2 == 0 {
			ev.Instance = insts[i%len(insts)]
		}
		if i%3 == 0 {
			ev.ServiceMeta = metas[i%len(metas)]
		}
		same("event", appendEvent(nil, ev), ev)
	}
	for _, m := range metas {
		same("meta", appendServiceMeta(nil, m), m)
	}
	for _, s := range strs {
		e := &api.Error{Code: api.CodeValidation, Message: s, Retry: len(s)%2 == 0}
		same("error", appendError(nil, e), e)
	}
}

func TestSSEEventHasNoNewline(t *testing.T) {
	ev := &api.Event{Service: "s", Kind: api.EventServiceMeta, Index: 9,
		ServiceMeta: &api.ServiceMeta{Data: json.RawMessage("{\n\"a\":\n1}"), Index: 9}}
	got := string(appendSSEEvent(nil, ev))
	want := "id: 9\ndata: {\"service\":\"s\",\"kind\":\"service_meta\",\"service_meta\":{\"data\":{\"a\":1},\"index\":9},\"index\":9}\n\n"
	if got != want {
		t.Errorf("got %q\nwant %q", got, want)
	}
}

func TestEncodeEventAllocs(t *testing.T) {
	inst := &api.Instance{ID: "a", Addr: "10.0.0.1:80", Proto: "http", Meta: map[string]string{"b": "2", "a": "1"}, Index: 12345}
	buf := make([]byte, 0, 512)
	ev := &api.Event{Service: "s", Kind: api.EventUp, Instance: inst, Index: 5}
	if n := testing.AllocsPerRun(100, func() { buf = appendSSEEvent(buf[:0], ev) }); n != 0 {
		t.Errorf("appendSSEEvent allocates %v times", n)
	}
}
