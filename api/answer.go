package api

import (
	"encoding/json"
	"fmt"
)

// DecodeHeartbeatAnswer reads the answer to a heartbeat request over NATS:
// nil for the JSON of OK, the *Error for the JSON of an Error, and an
// unknown_error for anything else.
func DecodeHeartbeatAnswer(data []byte) error {
	var ans struct {
		OK bool `json:"ok"`
		Error
	}
	if err := json.Unmarshal(data, &ans); err != nil {
		return &Error{Code: CodeUnknown, Message: fmt.Sprintf("decoding the NATS heartbeat answer %q: %v", data, err)}
	}
	if ans.OK {
		return nil
	}
	if ans.Code == "" {
		return &Error{Code: CodeUnknown, Message: fmt.Sprintf("unexpected NATS heartbeat answer %q", data)}
	}
	e := ans.Error
	if e.Code == CodeUnavailable {
		e.Retry = true
	}
	return &e
}
