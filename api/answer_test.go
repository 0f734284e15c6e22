package api

import "testing"

func TestDecodeHeartbeatAnswer(t *testing.T) {
	cases := []struct {
		name  string
		data  string
		code  ErrorCode // "" means success
		retry bool
	}{
		{"ok", `{"ok":true}`, "", false},
		{"validation error", `{"code":"validation_error","message":"bad id"}`, CodeValidation, false},
		{"unavailable is retryable", `{"code":"service_unavailable","message":"no leader"}`, CodeUnavailable, true},
		{"not json", `nope`, CodeUnknown, false},
		{"neither ok nor error", `{"ok":false}`, CodeUnknown, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := DecodeHeartbeatAnswer([]byte(c.data))
			if c.code == "" {
				if err != nil {
					t.Fatalf("got %v, want success", err)
				}
				return
			}
			e := AsError(err)
			if e == nil || e.Code != c.code || e.Retry != c.retry {
				t.Fatalf("got %#v, want code %s retry %v", e, c.code, c.retry)
			}
		})
	}
}
