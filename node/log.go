package node

import (
	"encoding/json"
	"io"
	"sort"
	"strings"

	"github.com/hashicorp/go-hclog"
	"github.com/rs/zerolog"
)

// newRaftLogger sends hashicorp/raft's hclog output to zerolog. Raft's info
// lines are chatty, so they go out at debug level; warnings and errors keep
// their level. Raft's key-value pairs become fields, named with underscores
// like the rest of discoverd's (last-leader-addr → last_leader_addr).
func newRaftLogger(log zerolog.Logger) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{
		Name:       "raft",
		Level:      hclog.Info,
		Output:     &hclogWriter{log: log.With().Str("component", "raft").Logger()},
		JSONFormat: true,
	})
}

type hclogWriter struct{ log zerolog.Logger }

var _ io.Writer = (*hclogWriter)(nil)

func (w *hclogWriter) Write(p []byte) (int, error) {
	var entry map[string]any
	if err := json.Unmarshal(p, &entry); err != nil {
		w.log.Warn().Str("line", strings.TrimSpace(string(p))).Msg("unparsed raft log line")
		return len(p), nil
	}
	msg, _ := entry["@message"].(string)
	level := zerolog.DebugLevel
	switch entry["@level"] {
	case "error":
		level = zerolog.ErrorLevel
	case "warn":
		level = zerolog.WarnLevel
	}
	if level == zerolog.WarnLevel && isFirstElection(msg, entry) {
		// No leader was ever known: a voter just started (a single voter
		// always elects itself this way). Nothing is wrong.
		level = zerolog.InfoLevel
	}
	keys := make([]string, 0, len(entry))
	for k := range entry {
		if !strings.HasPrefix(k, "@") {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	ev := w.log.WithLevel(level)
	for _, k := range keys {
		ev = ev.Interface(strings.ReplaceAll(k, "-", "_"), entry[k])
	}
	ev.Msg(msg)
	return len(p), nil
}

// isFirstElection reports whether a raft line is the election a voter
// starts when it has never heard of a leader.
func isFirstElection(msg string, entry map[string]any) bool {
	if !strings.HasPrefix(msg, "heartbeat timeout reached") {
		return false
	}
	addr, _ := entry["last-leader-addr"].(string)
	return addr == ""
}
