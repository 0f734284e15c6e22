package fsm

import (
	"bytes"
	"io"
	"strings"
	"testing"

	"github.com/discoverd/discoverd/api"
)

func TestBackupRestoreImage(t *testing.T) {
	f := New(nil)
	f.ApplyCommand(1, MustEncode(CmdAddService, &AddService{Service: "web"}))
	f.ApplyCommand(2, EncodeAddInstance("web", &api.Instance{ID: "a", Addr: "10.0.0.1:80", Proto: "http"}))
	f.ApplyCommand(3, MustEncode(CmdSetNode, &SetNode{Node: api.NodeInfo{Addr: "n1:1111"}}))
	b := f.Backup()
	if services, instances := b.Size(); services != 1 || instances != 1 || b.Index() != 3 {
		t.Fatalf("backup: %d services, %d instances, index %d", services, instances, b.Index())
	}
	var reg bytes.Buffer
	if err := b.WriteRegistry(&reg); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(reg.String(), "n1:1111") {
		t.Errorf("the backup holds the node table: %s", reg.String())
	}
	parsed, err := ParseBackup(reg.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	nodes := []api.NodeInfo{{Addr: "other:1111"}}
	img, err := parsed.RestoreImage(nodes)
	if err != nil {
		t.Fatal(err)
	}
	size := len(img)
	SetImageIndex(img, 18446744073709551615)
	SetImageIndex(img, 9000)
	if len(img) != size {
		t.Fatalf("SetImageIndex changed the image's size")
	}
	g := New(nil)
	if err := g.Restore(io.NopCloser(bytes.NewReader(img))); err != nil {
		t.Fatalf("restoring the image: %v\n%s", err, img)
	}
	if g.AppliedIndex() != 9000 {
		t.Errorf("restored index %d, want 9000", g.AppliedIndex())
	}
	if insts, _ := g.Instances("web"); len(insts) != 1 || insts[0].Index != 2 {
		t.Errorf("restored instances %v", insts)
	}
	if n := g.Nodes(); len(n) != 1 || n[0].Addr != "other:1111" {
		t.Errorf("restored node table %v, want the restoring cluster's", n)
	}
}

func TestParseBackupRefuses(t *testing.T) {
	for _, tc := range []struct{ name, registry, want string }{
		{"not JSON", `nope`, "malformed registry"},
		{"unknown field", `{"index":1,"services":[],"extra":1}`, "unknown field"},
		{"two values", `{"index":1,"services":[]} {}`, "data after"},
		{"bad service name", `{"index":1,"services":[{"name":"a b","config":{},"instances":[]}]}`, "service name"},
		{"service twice", `{"index":1,"services":[{"name":"a","config":{},"instances":[]},{"name":"a","config":{},"instances":[]}]}`, "twice"},
		{"bad leader type", `{"index":1,"services":[{"name":"a","config":{"leader_type":"x"},"instances":[]}]}`, "leader"},
		{"null instance", `{"index":1,"services":[{"name":"a","config":{},"instances":[null]}]}`, "null instance"},
		{"bad addr", `{"index":1,"services":[{"name":"a","config":{},"instances":[{"id":"i","addr":"nope","proto":"http","index":1}]}]}`, "instance"},
		{"no index", `{"index":1,"services":[{"name":"a","config":{},"instances":[{"id":"i","addr":"1.2.3.4:5","proto":"http"}]}]}`, "no index"},
		{"instance twice", `{"index":1,"services":[{"name":"a","config":{},"instances":[{"id":"i","addr":"1.2.3.4:5","proto":"http","index":1},{"id":"i","addr":"1.2.3.4:6","proto":"http","index":2}]}]}`, "twice"},
		{"leader not an instance", `{"index":1,"services":[{"name":"a","config":{"leader_type":"manual"},"instances":[],"manual_leader":"x"}]}`, "not one of its instances"},
		{"bad meta", `{"index":1,"services":[{"name":"a","config":{},"instances":[],"meta":{"data":1}}]}`, "meta"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseBackup([]byte(tc.registry))
			if !api.IsCode(err, api.CodeValidation) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("ParseBackup: %v, want a validation error saying %q", err, tc.want)
			}
		})
	}
}
