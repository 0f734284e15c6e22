package node

import (
	"bytes"
	"io"

	"github.com/hashicorp/go-hclog"
	"github.com/rs/zerolog"
)

// newRaftLogger sends hashicorp/raft's hclog output to zerolog. Raft's info
// lines are chatty, so they go out at debug level; warnings and errors keep
// their level.
func newRaftLogger(log zerolog.Logger) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{
		Name:       "raft",
		Level:      hclog.Info,
		Output:     &hclogWriter{log: log.With().Str("component", "raft").Logger()},
		JSONFormat: false,
		TimeFormat: " ",
	})
}

type hclogWriter struct{ log zerolog.Logger }

var _ io.Writer = (*hclogWriter)(nil)

func (w *hclogWriter) Write(p []byte) (int, error) {
	line := bytes.TrimSpace(p)
	level := zerolog.DebugLevel
	switch {
	case bytes.Contains(line, []byte("[ERROR]")):
		level = zerolog.ErrorLevel
	case bytes.Contains(line, []byte("[WARN]")):
		level = zerolog.WarnLevel
	}
	if i := bytes.Index(line, []byte("] ")); i >= 0 {
		line = line[i+2:]
	}
	w.log.WithLevel(level).Msg(string(line))
	return len(p), nil
}
