package node

import (
	"bytes"
	"testing"

	"github.com/discoverd/discoverd/api"
)

func TestCommandBatchEncoding(t *testing.T) {
	cmds := [][]byte{{5, '{', '}'}, {10, 1, 2, 3}, bytes.Repeat([]byte{9}, 300)}
	got, err := DecodeCommandBatch(EncodeCommandBatch(cmds))
	if err != nil || len(got) != len(cmds) {
		t.Fatalf("round trip: %q, %v", got, err)
	}
	for i := range cmds {
		if !bytes.Equal(got[i], cmds[i]) {
			t.Errorf("command %d: %q, want %q", i, got[i], cmds[i])
		}
	}
	good := EncodeCommandBatch(cmds[:1])
	for _, tc := range []struct {
		name string
		body []byte
	}{
		{"empty", nil},
		{"no commands", []byte{0}},
		{"more commands than bytes", []byte{100, 1, 5}},
		{"an empty command", []byte{1, 0}},
		{"truncated", good[:len(good)-1]},
		{"trailing bytes", append(bytes.Clone(good), 7)},
		{"too many commands", EncodeCommandBatch(make([][]byte, maxForwardBatch+1))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := DecodeCommandBatch(tc.body); !api.IsCode(err, api.CodeValidation) {
				t.Errorf("DecodeCommandBatch(%q) = %v, want a validation error", tc.body, err)
			}
		})
	}
}
