package api

import (
	"encoding/json"
	"reflect"
	"testing"
)

var decodeCases = []string{
	`{"id":"web-1","addr":"10.0.0.1:8080","proto":"http","meta":{"zone":"a","v":"1"}}`,
	`{"addr":"10.0.0.1:8080","proto":"http"}`,
	` { "addr" : "10.0.0.1:8080" ,` + "\n\t" + `"proto":"http", "index": 17 } ` + "\r\n",
	`{}`,
	`{"meta":{}}`,
	`{"meta":{"a":"1","a":"2"}}`,
	`{"index":0}`,
	`{"index":18446744073709551615}`,
	`{"index":18446744073709551616}`,
	`{"index":-1}`,
	`{"index":1.5}`,
	`{"index":1e3}`,
	`{"index":01}`,
	`{"id":"é","addr":"ü:1","proto":"x"}`,
	"{\"id\":\"\xff\"}",
	`{"id":"a\"b"}`,
	`{"id":"a\u0041"}`,
	`{"ID":"upper"}`,
	`{"Addr":"x:1","addr":"y:2"}`,
	`{"id":"a","id":"b"}`,
	`{"meta":{"a":"1"},"meta":{"b":"2"}}`,
	`{"id":null}`,
	`{"meta":null}`,
	`{"meta":{"a":null}}`,
	`{"meta":{"a":1}}`,
	`{"other":[1,2,{"x":null}],"addr":"10.0.0.1:1"}`,
	`{"id":"a"} x`,
	`{"id":"a"}{}`,
	`{"id":"a",}`,
	`{"id" "a"}`,
	`{"id":"a"`,
	`{"id":"a`,
	`[]`,
	`null`,
	``,
	`"str"`,
	"{\"id\":\"a\tb\"}",
	`{"id":""}`,
	`{"meta":{"":""}}`,
}

// decodeInstance must agree with encoding/json on every input: same error
// or not, same instance.
func checkDecodeAgrees(t *testing.T, data []byte) {
	t.Helper()
	var want Instance
	wantErr := json.Unmarshal(data, &want)
	var got Instance
	gotErr := DecodeInstance(data, &got)
	if (gotErr == nil) != (wantErr == nil) {
		t.Fatalf("%q: DecodeInstance error %v, encoding/json error %v", data, gotErr, wantErr)
	}
	if gotErr != nil {
		return
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("%q: DecodeInstance %#v, encoding/json %#v", data, got, want)
	}
}

func TestDecodeInstanceMatchesEncodingJSON(t *testing.T) {
	for _, c := range decodeCases {
		checkDecodeAgrees(t, []byte(c))
	}
	// The common shape takes the fast path.
	var inst Instance
	if !fastDecodeInstance([]byte(decodeCases[0]), &inst) || inst.Meta["zone"] != "a" {
		t.Fatalf("the common shape missed the fast path: %+v", inst)
	}
}

func FuzzDecodeInstance(f *testing.F) {
	for _, c := range decodeCases {
		f.Add([]byte(c))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		checkDecodeAgrees(t, data)
	})
}

func TestDecodeInstanceAllocs(t *testing.T) {
	data := []byte(`{"id":"web-1","addr":"10.0.0.1:8080","proto":"http"}`)
	inst := new(Instance)
	n := testing.AllocsPerRun(1000, func() {
		*inst = Instance{}
		if err := DecodeInstance(data, inst); err != nil {
			t.Fatal(err)
		}
	})
	if n > 1 {
		t.Fatalf("decoding an instance without meta allocates %v times, want 1", n)
	}
}
