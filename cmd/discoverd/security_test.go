package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rs/zerolog"
)

func TestSecurityFlags(t *testing.T) {
	authFile := filepath.Join(t.TempDir(), "auth.json")
	os.WriteFile(authFile, []byte(`{"tokens": [{"name": "ops", "secret": "secret-admin", "role": "admin"}]}`), 0o600)
	noAdmin := filepath.Join(t.TempDir(), "auth.json")
	os.WriteFile(noAdmin, []byte(`{"tokens": [{"name": "dash", "secret": "secret-read", "role": "read"}]}`), 0o600)
	const peers = "127.0.0.1:1111,127.0.0.1:2222,127.0.0.1:3333"
	for _, tc := range []struct {
		name     string
		o        options
		wantErr  string
		wantWarn bool
	}{
		{"loopback without auth", options{addr: "127.0.0.1:1111"}, "", false},
		{"localhost without auth", options{addr: "localhost:1111"}, "", false},
		{"every interface without auth", options{addr: "0.0.0.0:1111"}, "", true},
		{"empty host without auth", options{addr: ":1111"}, "", true},
		{"loopback with auth and no TLS", options{addr: "127.0.0.1:1111", authFile: authFile}, "", false},
		{"network with auth and no TLS", options{addr: "10.0.0.1:1111", authFile: authFile}, "needs TLS", false},
		{"a TLS flag alone", options{addr: "127.0.0.1:1111", tlsCert: "x.pem"}, "needs all of --tls-cert, --tls-key and --tls-ca", false},
		{"no admin token, single node", options{addr: "127.0.0.1:1111", authFile: noAdmin}, "", false},
		{"no admin token, a cluster of itself", options{addr: "127.0.0.1:1111", peers: "127.0.0.1:1111", authFile: noAdmin}, "", false},
		{"no admin token, a voter of a cluster", options{addr: "127.0.0.1:1111", peers: peers, authFile: noAdmin}, "has no admin token", false},
		{"no admin token, a proxy", options{addr: "127.0.0.1:4444", peers: peers, authFile: noAdmin}, "has no admin token", false},
		{"no admin token, advertised into a cluster", options{addr: "127.0.0.1:0", advertise: "127.0.0.1:2222", peers: peers, authFile: noAdmin}, "has no admin token", false},
		{"an admin token, a voter of a cluster", options{addr: "127.0.0.1:1111", peers: peers, authFile: authFile}, "", false},
		{"a broken auth file", options{addr: "127.0.0.1:1111", authFile: "/nonexistent"}, "--auth-file", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var logs bytes.Buffer
			_, err := setupSecurity(&tc.o, zerolog.New(&logs))
			if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("error %v, want %q", err, tc.wantErr)
			}
			warned := strings.Contains(logs.String(), "anyone who can reach this node can change the registry")
			if warned != tc.wantWarn || strings.Count(logs.String(), `"level":"warn"`) > 1 {
				t.Fatalf("logs %q, want the warning: %v (once)", logs.String(), tc.wantWarn)
			}
			if strings.Contains(logs.String(), "secret-admin") {
				t.Fatalf("a secret was logged: %s", logs.String())
			}
		})
	}
}
