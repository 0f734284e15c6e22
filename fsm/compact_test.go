package fsm

import (
	"encoding/binary"
	"reflect"
	"strconv"
	"testing"

	"github.com/discoverd/discoverd/api"
)

func TestCompactEncoding(t *testing.T) {
	in := api.Instance{ID: "i1", Addr: "10.0.0.1:80", Proto: "http", Meta: map[string]string{"zone": "b", "a": "", "k": "v"}, Index: 42}
	b := EncodeAddInstance("svc", &in)
	want := "\x0a" + "\x03svc" + "\x02i1" + "\x0b10.0.0.1:80" + "\x04http" + "\x03" + "\x01a\x00" + "\x01k\x01v" + "\x04zone\x01b"
	if string(b) != want {
		t.Fatalf("encoded %q\nwant    %q", b, want)
	}
	if e, err := Encode(CmdAddInstanceCompact, &AddInstance{Service: "svc", Instance: in}); err != nil || string(e) != want {
		t.Fatalf("Encode: %q, %v", e, err)
	}
	if e := MustEncode(CmdAddInstanceCompact, AddInstance{Service: "svc", Instance: in}); string(e) != want {
		t.Fatalf("MustEncode: %q", e)
	}
	if _, err := Encode(CmdAddInstanceCompact, RemoveInstance{}); err == nil {
		t.Fatal("Encode took a RemoveInstance as an add_instance_compact body")
	}
	if got := string(AppendAddInstance([]byte("xy"), "svc", &in)); got != "xy"+want {
		t.Fatalf("AppendAddInstance: %q", got)
	}

	svc, out, err := decodeAddInstance(b[1:])
	if err != nil {
		t.Fatal(err)
	}
	in.Index = 0
	if string(svc) != "svc" || !reflect.DeepEqual(out, in) {
		t.Fatalf("decoded %q %+v, want svc %+v", svc, out, in)
	}
	// No meta decodes as nil meta, as PrepareInstance leaves it.
	_, out, err = decodeAddInstance(EncodeAddInstance("s", &api.Instance{ID: "x", Addr: "h:1", Proto: "tcp"})[1:])
	if err != nil || out.Meta != nil || out.ID != "x" || out.Addr != "h:1" || out.Proto != "tcp" {
		t.Fatalf("decoded %+v, %v", out, err)
	}
}

// The compact and the JSON add are the same command: the same history in
// either gives the same results, state and events.
func TestCompactAddInstanceMatchesJSON(t *testing.T) {
	type step struct {
		c    AddInstance
		code api.ErrorCode // "" when it must apply
	}
	steps := []step{
		{inst("a", "i1", "10.0.0.1:80", nil), ""},
		{inst("a", "i2", "10.0.0.2:80", map[string]string{"k": "v", "x": "y"}), ""},
		{inst("a", "i1", "10.0.0.1:80", nil), ""},                                                   // unchanged: kept
		{inst("a", "i1", "10.0.0.1:81", nil), ""},                                                   // update of the leader
		{inst("a", "i2", "10.0.0.2:80", map[string]string{"k": "w"}), ""},                           // meta update
		{inst("a", "i2", "10.0.0.2:80", map[string]string{}), ""},                                   // meta removed
		{AddInstance{Service: "a", Instance: api.Instance{Addr: "10.0.0.5:80", Proto: "http"}}, ""}, // default id
		{inst("m", "m1", "10.0.1.1:80", nil), ""},
		{inst("nope", "i1", "10.0.0.1:80", nil), api.CodeNotFound},
		{inst("a", "bad", "10.0.0.5", nil), api.CodeValidation},
		{inst("a", "bad id", "10.0.0.5:1", nil), api.CodeValidation},
		{AddInstance{Service: "a", Instance: api.Instance{ID: "p", Addr: "h:1", Proto: "HTTP"}}, api.CodeValidation},
		{inst("a", "e", "h:1", map[string]string{"": "v"}), api.CodeValidation},
	}
	run := func(ct CommandType) (*harness, []string, []*Result) {
		h := newHarness(t)
		h.ok(1, CmdAddService, addSvc("a", ""))
		h.ok(2, CmdAddService, addSvc("m", api.LeaderTypeManual))
		var results []*Result
		for i, s := range steps {
			idx := uint64(10 + i)
			if s.code == "" {
				results = append(results, h.ok(idx, ct, s.c))
			} else {
				results = append(results, h.fail(idx, s.code, ct, s.c))
			}
			checkAllServices(t, h.f)
		}
		return h, h.rec.take(), results
	}
	hj, evj, rj := run(CmdAddInstance)
	hc, evc, rc := run(CmdAddInstanceCompact)
	if !reflect.DeepEqual(evj, evc) {
		t.Fatalf("events differ\njson:    %v\ncompact: %v", evj, evc)
	}
	if a, b := fullState(hj.f), fullState(hc.f); a != b {
		t.Fatalf("states differ\njson:    %s\ncompact: %s", a, b)
	}
	for i := range rj {
		if (rj[i].Err == nil) != (rc[i].Err == nil) || rj[i].Err != nil && rj[i].Err.Error() != rc[i].Err.Error() ||
			!reflect.DeepEqual(rj[i].Instance, rc[i].Instance) {
			t.Fatalf("step %d: json %+v %v, compact %+v %v", i, rj[i].Instance, rj[i].Err, rc[i].Instance, rc[i].Err)
		}
	}
}

// The stored instance owns its strings: overwriting the entry after it was
// applied (Raft reuses its buffers) changes nothing.
func TestCompactInstanceOwnsItsStrings(t *testing.T) {
	h := newHarness(t)
	h.ok(1, CmdAddService, addSvc("a", ""))
	data := EncodeAddInstance("a", &api.Instance{ID: "i1", Addr: "10.0.0.1:80", Proto: "tcp", Meta: map[string]string{"k": "v"}})
	res := h.applyRaw(2, data)
	if res.Err != nil {
		t.Fatal(res.Err)
	}
	for i := range data {
		data[i] = 'X'
	}
	got, _ := h.f.Instance("a", "i1")
	if got == nil || got.ID != "i1" || got.Addr != "10.0.0.1:80" || got.Proto != "tcp" || got.Meta["k"] != "v" || got.Index != 2 {
		t.Fatalf("stored instance %+v after its entry was overwritten", got)
	}
}

func TestMalformedCompactCommands(t *testing.T) {
	h := newHarness(t)
	h.ok(1, CmdAddService, addSvc("a", ""))
	h.ok(2, CmdAddInstance, inst("a", "i1", "10.0.0.1:80", nil))
	h.rec.take()
	good := EncodeAddInstance("a", &api.Instance{ID: "i2", Addr: "10.0.0.2:80", Proto: "tcp", Meta: map[string]string{"k": "v", "l": "w"}})
	idx := uint64(3)
	// Every strict prefix is truncated.
	for n := 1; n < len(good); n++ {
		h.failRaw(idx, api.CodeValidation, good[:n])
		idx++
	}
	str := func(s string) string { return string(binary.AppendUvarint(nil, uint64(len(s)))) + s }
	head := "\x0a" + str("a") + str("i3") + str("10.0.0.3:80") + str("tcp")
	for name, data := range map[string]string{
		"trailing byte":        string(good) + "\x00",
		"keys out of order":    head + "\x02" + str("l") + str("w") + str("k") + str("v"),
		"repeated key":         head + "\x02" + str("k") + str("v") + str("k") + str("w"),
		"huge meta count":      head + "\xff\xff\xff\xff\x0f",
		"more entries":         head + "\x03" + str("k") + str("v") + str("l") + str("w"),
		"length past the end":  "\x0a" + "\x05a",
		"overlong varint":      "\x0a" + "\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01",
		"huge string length":   "\x0a" + "\xff\xff\xff\xff\xff\xff\xff\xff\x7f",
		"empty body":           "\x0a",
		"no meta count":        head,
		"unknown service":      "\x0a" + str("zz") + str("i3") + str("10.0.0.3:80") + str("tcp") + "\x00",
		"invalid proto":        "\x0a" + str("a") + str("i3") + str("10.0.0.3:80") + str("TCP") + "\x00",
		"empty meta key":       head + "\x01" + str("") + str("v"),
		"meta over the limit":  head + "\x01" + str("k") + str(string(make([]byte, api.MaxMetaBytes))),
		"addr not UTF-8":       "\x0a" + str("a") + str("i3") + str("h\xff:1") + str("tcp") + "\x00",
		"meta value not UTF-8": head + "\x01" + str("k") + str("\xc3"),
		"meta key not UTF-8":   head + "\x01" + str("\xed\xa0\x80") + str("v"),
		"json body for type10": "\x0a" + `{"service":"a","instance":{"id":"i3","addr":"10.0.0.3:80","proto":"tcp"}}`,
	} {
		code := api.CodeValidation
		if name == "unknown service" {
			code = api.CodeNotFound
		}
		t.Run(name, func(t *testing.T) {
			h.t = t
			h.failRaw(idx, code, []byte(data))
		})
		idx++
	}
	h.t = t
	if evs := h.rec.take(); len(evs) != 0 {
		t.Fatalf("rejected entries emitted %v", evs)
	}
	// And the good one applies.
	if res := h.applyRaw(idx, good); res.Err != nil || res.Instance.Meta["l"] != "w" {
		t.Fatalf("good entry: %+v %v", res.Instance, res.Err)
	}
}

// Registering an instance with the compact command allocates the instance,
// one block for its strings and the result, plus the amortized growth of
// the service's slice and index.
func TestCompactAddAllocations(t *testing.T) {
	f := New(func([]api.Event) {})
	f.ApplyCommand(1, MustEncode(CmdAddService, addSvc("a", "")))
	const n = 4096
	cmds := make([][]byte, n)
	for i := range cmds {
		cmds[i] = EncodeAddInstance("a", &api.Instance{ID: "i" + strconv.Itoa(i), Addr: "10.0.0.1:" + strconv.Itoa(1+i), Proto: "http"})
	}
	i := 0
	allocs := testing.AllocsPerRun(n-1, func() {
		f.ApplyCommand(uint64(2+i), cmds[i])
		i++
	})
	if allocs > 3.1 {
		t.Fatalf("%.2f allocations per compact add, want at most 3 (instance, strings, result) and growth", allocs)
	}
}

// BenchmarkApplyAddInstance registers new instances in one service with the
// JSON command (type 5) and the compact one (type 10).
func BenchmarkApplyAddInstance(b *testing.B) {
	for _, ct := range []CommandType{CmdAddInstance, CmdAddInstanceCompact} {
		b.Run(ct.String(), func(b *testing.B) {
			cmds := make([][]byte, b.N)
			for i := range cmds {
				c := AddInstance{Service: "bench-register-1a2b3c4d", Instance: api.Instance{
					ID: "r-" + strconv.Itoa(i), Addr: "10.0." + strconv.Itoa(i>>8&255) + "." + strconv.Itoa(i&255) + ":1024", Proto: "http"}}
				cmds[i] = MustEncode(ct, c)
			}
			f := New(func([]api.Event) {})
			f.ApplyCommand(1, MustEncode(CmdAddService, addSvc("bench-register-1a2b3c4d", "")))
			b.ReportAllocs()
			b.ResetTimer()
			for i := range cmds {
				if res := f.ApplyCommand(uint64(2+i), cmds[i]); res.Err != nil {
					b.Fatal(res.Err)
				}
			}
		})
	}
}

// BenchmarkEncodeAddInstance builds the entry of one registration, as the
// node does for each, in JSON and compact.
func BenchmarkEncodeAddInstance(b *testing.B) {
	in := api.Instance{ID: "r-12345", Addr: "10.0.48.57:1024", Proto: "http"}
	b.Run("json", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			MustEncode(CmdAddInstance, &AddInstance{Service: "bench-register-1a2b3c4d", Instance: in})
		}
	})
	b.Run("compact", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			EncodeAddInstance("bench-register-1a2b3c4d", &in)
		}
	})
}
