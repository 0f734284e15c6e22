package snapshot

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

func TestWriteThenParse(t *testing.T) {
	var buf bytes.Buffer
	hdr := Header{Version: "v1", Created: time.Unix(1700000000, 0).UTC(), Index: 42, Services: 1, Instances: 2}
	w, err := NewWriter(&buf, hdr)
	if err != nil {
		t.Fatal(err)
	}
	registry := `{"index":42,"services":[{"name":"web","config":{"leader_type":"oldest"},"instances":[{"id":"a","addr":"1.2.3.4:80","proto":"http","index":3},{"id":"b","addr":"1.2.3.5:80","proto":"http","index":4}]}]}` + "\n"
	w.Write([]byte(registry))
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	data := buf.Bytes()
	f, err := Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	hdr.Format = FormatVersion
	if f.Header != hdr || string(f.Registry) != registry || f.Size != int64(len(data)) || len(f.Checksum) != 64 {
		t.Fatalf("parsed %+v", f)
	}
	reg, err := f.DecodeRegistry()
	if err != nil || reg.Index != 42 || len(reg.Services) != 1 || len(reg.Services[0].Instances) != 2 {
		t.Fatalf("registry %+v, %v", reg, err)
	}
	if _, err := Read(bytes.NewReader(data), int64(len(data)-1)); err == nil || !strings.Contains(err.Error(), "larger") {
		t.Fatalf("Read over the limit: %v", err)
	}
	// Every cut of the file is refused.
	for i := 0; i < len(data); i++ {
		if _, err := Parse(data[:i]); err == nil {
			t.Fatalf("the file cut at byte %d of %d parsed", i, len(data))
		}
	}
	// Every flipped bit is refused.
	for i := 0; i < len(data); i++ {
		for bit := 0; bit < 8; bit++ {
			b := bytes.Clone(data)
			b[i] ^= 1 << bit
			if _, err := Parse(b); err == nil {
				t.Fatalf("the file with bit %d of byte %d flipped parsed", bit, i)
			}
		}
	}
}
