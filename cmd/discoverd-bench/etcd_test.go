package main

import (
	"encoding/base64"
	"encoding/json"
	"testing"
)

func TestEtcdLeaseID(t *testing.T) {
	cases := []struct {
		name, resp, want string
		ok               bool
	}{
		{"gateway string", `{"header":{"cluster_id":"1","revision":"5"},"ID":"7587871563528795906","TTL":"60"}`, "7587871563528795906", true},
		{"number", `{"ID": 42,"TTL":"60"}`, "42", true},
		{"no id", `{"error":"etcdserver: too many requests","code":14}`, "", false},
		{"not a number", `{"ID":"abc"}`, "", false},
		{"empty", `{"ID":""}`, "", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := etcdLeaseID([]byte(c.resp))
			if (err == nil) != c.ok || got != c.want {
				t.Fatalf("etcdLeaseID(%s) = %q, %v; want %q, ok %v", c.resp, got, err, c.want, c.ok)
			}
		})
	}
}

func TestEtcdPutBody(t *testing.T) {
	value := appendInstanceBody(nil, "r-7", 7)
	var put struct{ Key, Value, Lease string }
	if err := json.Unmarshal(etcdPutBody(nil, "/k/r-7", value, "123"), &put); err != nil {
		t.Fatal(err)
	}
	key, _ := base64.StdEncoding.DecodeString(put.Key)
	val, _ := base64.StdEncoding.DecodeString(put.Value)
	if string(key) != "/k/r-7" || string(val) != string(value) || put.Lease != "123" {
		t.Fatalf("put %+v decodes to key %q value %q", put, key, val)
	}
}
