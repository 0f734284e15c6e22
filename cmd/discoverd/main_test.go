package main

import (
	"bytes"
	"encoding/json"
	"io"
	"testing"

	"github.com/rs/zerolog"
)

// The JSON start line writes durations as the flags take them, with units.
func TestStartLineDurationsHaveUnits(t *testing.T) {
	o, err := parseFlags([]string{"--log-format", "json", "--instance-ttl", "10s", "--expiry-check-interval", "250ms"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	logStarted(zerolog.New(&buf), o, "127.0.0.1:1111", "127.0.0.1:1111", "voter", "nats://127.0.0.1:4222")
	var line map[string]any
	if err := json.Unmarshal(buf.Bytes(), &line); err != nil {
		t.Fatalf("start line %q: %v", buf.String(), err)
	}
	for field, want := range map[string]string{"instance_ttl": "10s", "expiry_check_interval": "250ms", "message": "discoverd started"} {
		if got := line[field]; got != want {
			t.Errorf("%s = %#v, want %q (line %s)", field, got, want, buf.String())
		}
	}
}
