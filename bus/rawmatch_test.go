package bus

import (
	"testing"

	"github.com/discoverd/discoverd/api"
)

var rawStored = api.Instance{ID: "web-1", Addr: "10.0.0.1:80", Proto: "http", Meta: map[string]string{"zone": "a", "v": "2"}}

// decodedSame is what the decoding path finds: the heartbeat decodes, is a
// valid instance, and has stored's registration.
func decodedSame(data []byte, stored *api.Instance) bool {
	var inst api.Instance
	if api.DecodeInstance(data, &inst) != nil || api.PrepareInstance(&inst, "") != nil {
		return false
	}
	return stored.SameRegistration(&inst)
}

func rawSame(data []byte, stored *api.Instance) (scanned, same bool) {
	var r rawHeartbeat
	if !r.scan(data) {
		return false, false
	}
	return true, r.idString() == stored.ID && r.sameAs(stored)
}

func TestRawHeartbeat(t *testing.T) {
	cases := []struct {
		name          string
		data          string
		scanned, same bool
	}{
		{"same", `{"id":"web-1","addr":"10.0.0.1:80","proto":"http","meta":{"zone":"a","v":"2"}}`, true, true},
		{"same, any order and spacing", " {\"meta\" : {\"v\":\"2\" ,\"zone\":\"a\"},\r\n\"proto\":\"http\",\t\"addr\":\"10.0.0.1:80\",\"id\":\"web-1\"} ", true, true},
		{"other addr", `{"id":"web-1","addr":"10.0.0.2:80","proto":"http","meta":{"zone":"a","v":"2"}}`, true, false},
		{"other proto", `{"id":"web-1","addr":"10.0.0.1:80","proto":"tcp","meta":{"zone":"a","v":"2"}}`, true, false},
		{"other id", `{"id":"web-2","addr":"10.0.0.1:80","proto":"http","meta":{"zone":"a","v":"2"}}`, true, false},
		{"meta value", `{"id":"web-1","addr":"10.0.0.1:80","proto":"http","meta":{"zone":"b","v":"2"}}`, true, false},
		{"meta missing a key", `{"id":"web-1","addr":"10.0.0.1:80","proto":"http","meta":{"zone":"a"}}`, true, false},
		{"meta with another key", `{"id":"web-1","addr":"10.0.0.1:80","proto":"http","meta":{"zone":"a","w":"2"}}`, true, false},
		{"no meta", `{"id":"web-1","addr":"10.0.0.1:80","proto":"http"}`, true, false},
		{"no addr", `{"id":"web-1","proto":"http","meta":{"zone":"a","v":"2"}}`, true, false},
		{"no proto", `{"id":"web-1","addr":"10.0.0.1:80","meta":{"zone":"a","v":"2"}}`, true, false},
		// Left to the decoder:
		{"repeated meta key", `{"id":"web-1","addr":"10.0.0.1:80","proto":"http","meta":{"zone":"a","zone":"a"}}`, false, false},
		{"repeated key", `{"id":"web-1","addr":"10.0.0.9:80","addr":"10.0.0.1:80","proto":"http","meta":{"zone":"a","v":"2"}}`, false, false},
		{"escape", `{"id":"web-1","addr":"10.0.0.1:80","proto":"htt\u0070","meta":{"zone":"a","v":"2"}}`, false, false},
		{"control character", "{\"id\":\"web-1\",\"addr\":\"10.0.0.1:80\",\"proto\":\"http\x01\"}", false, false},
		{"non-ASCII", `{"id":"web-1","addr":"10.0.0.1:80","proto":"http","meta":{"zone":"é","v":"2"}}`, false, false},
		{"upper-case key", `{"ID":"web-1","addr":"10.0.0.1:80","proto":"http","meta":{"zone":"a","v":"2"}}`, false, false},
		{"index", `{"id":"web-1","addr":"10.0.0.1:80","proto":"http","index":3}`, false, false},
		{"null meta", `{"id":"web-1","addr":"10.0.0.1:80","proto":"http","meta":null}`, false, false},
		{"number meta value", `{"id":"web-1","addr":"10.0.0.1:80","proto":"http","meta":{"zone":1}}`, false, false},
		{"no id", `{"addr":"10.0.0.1:80","proto":"http"}`, false, false},
		{"empty id", `{"id":"","addr":"10.0.0.1:80","proto":"http"}`, false, false},
		{"trailing data", `{"id":"web-1","addr":"10.0.0.1:80","proto":"http","meta":{"zone":"a","v":"2"}}x`, false, false},
		{"two objects", `{"id":"web-1"}{"id":"web-1"}`, false, false},
		{"trailing comma", `{"id":"web-1","addr":"10.0.0.1:80","proto":"http",}`, false, false},
		{"unterminated", `{"id":"web-1","addr":"10.0.0.1:80`, false, false},
		{"empty object", `{}`, false, false},
		{"array", `[]`, false, false},
		{"empty", ``, false, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			scanned, same := rawSame([]byte(c.data), &rawStored)
			if scanned != c.scanned || same != c.same {
				t.Fatalf("scanned %v, same %v; want %v, %v", scanned, same, c.scanned, c.same)
			}
			if same && !decodedSame([]byte(c.data), &rawStored) {
				t.Fatal("the decoder does not find it the same")
			}
		})
	}
}

// FuzzRawHeartbeat: whatever the payload, the in-place check never finds a
// heartbeat the same as a registered instance when the decoding path would
// not (a heartbeat acknowledged for an instance that it does not match, or
// that is not even valid).
func FuzzRawHeartbeat(f *testing.F) {
	f.Add([]byte(`{"id":"web-1","addr":"10.0.0.1:80","proto":"http","meta":{"zone":"a","v":"2"}}`))
	f.Add([]byte(`{"id":"web-1","addr":"10.0.0.1:80","proto":"http","meta":{}}`))
	f.Add([]byte(` {"proto":"http","addr":"10.0.0.1:80","id":"web-1"} `))
	f.Fuzz(func(t *testing.T, data []byte) {
		var r rawHeartbeat
		if !r.scan(data) {
			return
		}
		var decoded api.Instance
		if api.DecodeInstance(data, &decoded) != nil || api.PrepareInstance(&decoded, "") != nil {
			// Not a valid instance: then it must match no valid stored one.
			if r.sameAs(&rawStored) {
				t.Fatalf("%q: invalid, yet the same as %+v", data, rawStored)
			}
			return
		}
		// A valid instance: the check agrees with the decoder both ways on
		// the instance itself and on another one.
		if !r.sameAs(&decoded) || r.idString() != decoded.ID {
			t.Fatalf("%q: not the same as its own decoding %+v", data, decoded)
		}
		if r.sameAs(&rawStored) != rawStored.SameRegistration(&decoded) {
			t.Fatalf("%q: in place %v, decoded %v", data, r.sameAs(&rawStored), rawStored.SameRegistration(&decoded))
		}
	})
}
