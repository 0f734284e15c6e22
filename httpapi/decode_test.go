package httpapi

import (
	"encoding/json"
	"reflect"
	"testing"

	"github.com/discoverd/discoverd/api"
)

var decodeSeeds = []string{
	`{"addr":"10.0.0.1:80","proto":"http","meta":{"version":"1.2.3","zone":"a"}}`,
	` { "id" : "a" , "addr":"h:1", "proto":"tcp", "index": 42 } `,
	`{"addr":"h:1","proto":"http","meta":{}}`,
	`{}`, `{"index":0}`, `{"index":18446744073709551615}`, `{"index":18446744073709551616}`,
	`{"index":-1}`, `{"index":1.5}`, `{"index":1e3}`, `{"index":01}`,
	`{"ADDR":"h:1"}`, `{"addr":"a\"b"}`, `{"addr":"\u00e9"}`, `{"addr":"é☃"}`, "{\"addr\":\"\xff\"}",
	`{"addr":null}`, `{"meta":null}`, `{"meta":{"a":1}}`, `{"meta":{"a":"1","a":"2"}}`,
	`{"addr":"a","addr":"b"}`, `{"other":1}`, `{"addr":"x",}`, `{"addr":"x"} x`, `{"addr":"x"`,
	`[]`, `null`, ``, `"x"`, "{\"addr\":\"a\tb\"}", `{"meta":{"k":"v"},"meta":{"j":"w"}}`,
}

// The fast path must decode exactly as encoding/json does, or step aside.
func TestFastDecodeMatchesEncodingJSON(t *testing.T) {
	fast := 0
	for _, s := range decodeSeeds {
		if checkDecode(t, []byte(s)) {
			fast++
		}
	}
	if fast < 5 {
		t.Errorf("the fast path took only %d of the seeds", fast)
	}
	var inst api.Instance
	if !fastDecodeInstance([]byte(decodeSeeds[0]), &inst) {
		t.Errorf("the fast path refused the common heartbeat body")
	}
}

func FuzzFastDecodeInstance(f *testing.F) {
	for _, s := range decodeSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) { checkDecode(t, b) })
}

func checkDecode(t *testing.T, b []byte) (tookFastPath bool) {
	t.Helper()
	var fast api.Instance
	if !fastDecodeInstance(b, &fast) {
		return false
	}
	var want api.Instance
	if err := json.Unmarshal(b, &want); err != nil {
		t.Fatalf("fast path accepted %q, encoding/json says %v", b, err)
	}
	if !reflect.DeepEqual(fast, want) {
		t.Fatalf("%q: fast path %+v, encoding/json %+v", b, fast, want)
	}
	return true
}

func TestDecodeInstanceAllocs(t *testing.T) {
	b := []byte(decodeSeeds[0])
	n := testing.AllocsPerRun(100, func() {
		var inst api.Instance
		if err := decodeInstance(b, &inst); err != nil {
			t.Fatal(err)
		}
	})
	// addr, proto, the map and its two keys and two values.
	if n > 8 {
		t.Errorf("decodeInstance allocates %v times", n)
	}
}

func BenchmarkDecodeInstance(b *testing.B) {
	body := []byte(decodeSeeds[0])
	b.Run("fast", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			var inst api.Instance
			decodeInstance(body, &inst)
		}
	})
	b.Run("encoding-json", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			var inst api.Instance
			json.Unmarshal(body, &inst)
		}
	})
}
