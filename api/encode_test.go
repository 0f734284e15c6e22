package api

import (
	"encoding/json"
	"strings"
	"testing"
)

// encodeStrings are strings that exercise every escaping rule of
// encoding/json, including its HTML escaping.
var encodeStrings = []string{
	"",
	"plain",
	"10.0.0.1:8080",
	`quote " backslash \ slash /`,
	"ctl \x00\x01\x07\x1f\x7f\b\f\n\r\t",
	"html <a href='x'>&amp;</a>",
	"utf8 é ☃ 𝄞 日本語",
	"bad utf8 \xff\xfe x \xc3",
	"truncated at the end \xe2\x82",
	"seps \u2028 \u2029 \u2027 \u202a",
	"\ufffd replacement as is",
	strings.Repeat("long ", 300),
}

func encodeInstances() []*Instance {
	insts := []*Instance{
		nil,
		{},
		{ID: "web-1", Addr: "10.0.0.1:8080", Proto: "http", Index: 1},
		{ID: "nil-meta", Meta: nil, Index: 2},
		{ID: "empty-meta", Meta: map[string]string{}, Index: 3},
		{ID: "empty-key", Meta: map[string]string{"": ""}, Index: 4},
		{ID: "max-index", Index: ^uint64(0)},
		{ID: "sorted", Meta: map[string]string{"b": "2", "a": "1", "B": "3", "aa": "4", "é": "5", "<": "6"}},
	}
	for i, s := range encodeStrings {
		insts = append(insts,
			&Instance{ID: s, Addr: s + ":1", Proto: s, Index: uint64(i) * 1e17},
			&Instance{ID: "m", Addr: "a:1", Proto: "http", Meta: map[string]string{s: s, "k" + s: "v", "z": s}})
	}
	// More meta keys than AppendInstance sorts on the stack.
	big := map[string]string{}
	for i := 0; i < 40; i++ {
		big[strings.Repeat("k", i%7)+string(rune('a'+i%26))+strings.Repeat("x", i)] = "v"
	}
	return append(insts, &Instance{ID: "big", Meta: big})
}

func checkAppendInstance(t *testing.T, inst *Instance) {
	t.Helper()
	want, err := json.Marshal(inst)
	if err != nil {
		t.Fatal(err)
	}
	if got := AppendInstance(nil, inst); string(got) != string(want) {
		t.Fatalf("AppendInstance(%#v):\n got %s\nwant %s", inst, got, want)
	}
	// It appends: what dst holds stays in front.
	if got := AppendInstance([]byte("x"), inst); string(got) != "x"+string(want) {
		t.Fatalf("AppendInstance after a prefix: got %s", got)
	}
}

// AppendInstance must write exactly what encoding/json writes, so that the
// snapshots, HTTP answers and events it encodes read back the same anywhere.
func TestAppendInstanceMatchesEncodingJSON(t *testing.T) {
	for _, inst := range encodeInstances() {
		checkAppendInstance(t, inst)
	}
}

func TestAppendStringMatchesEncodingJSON(t *testing.T) {
	strs := append([]string{}, encodeStrings...)
	for c := rune(0); c < 0x80; c++ {
		strs = append(strs, string(c))
	}
	for _, s := range strs {
		want, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		if got := AppendString(nil, s); string(got) != string(want) {
			t.Errorf("AppendString(%q):\n got %s\nwant %s", s, got, want)
		}
	}
}

func FuzzAppendInstance(f *testing.F) {
	for _, s := range encodeStrings {
		f.Add(s, s+":1", "http", s, "v", uint64(len(s)))
	}
	f.Fuzz(func(t *testing.T, id, addr, proto, k, v string, index uint64) {
		checkAppendInstance(t, &Instance{ID: id, Addr: addr, Proto: proto, Index: index})
		checkAppendInstance(t, &Instance{ID: id, Addr: addr, Proto: proto, Meta: map[string]string{k: v, v: k}, Index: index})
	})
}

func TestAppendInstanceAllocs(t *testing.T) {
	inst := &Instance{ID: "a", Addr: "10.0.0.1:80", Proto: "http", Meta: map[string]string{"b": "2", "a": "1", "<": "\u2028"}, Index: 12345}
	buf := make([]byte, 0, 512)
	if n := testing.AllocsPerRun(100, func() { buf = AppendInstance(buf[:0], inst) }); n != 0 {
		t.Errorf("AppendInstance allocates %v times", n)
	}
}

func BenchmarkAppendInstance(b *testing.B) {
	inst := &Instance{ID: "web-1", Addr: "10.0.0.1:8080", Proto: "http", Meta: map[string]string{"zone": "a", "version": "1.2.3"}, Index: 12345}
	buf := make([]byte, 0, 512)
	b.ReportAllocs()
	for b.Loop() {
		buf = AppendInstance(buf[:0], inst)
	}
}
