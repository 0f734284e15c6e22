package auth

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rs/zerolog"
)

const sample = `{"tokens": [
  {"name": "ops",  "secret": "s3cr3t-ops",  "role": "admin"},
  {"name": "web",  "secret": "s3cr3t-web",  "role": "service", "services": ["web", "web-*"]},
  {"name": "dash", "secret": "s3cr3t-dash", "role": "read"}
]}`

func TestParseRefusesBadFiles(t *testing.T) {
	for _, tc := range []struct{ name, file, want string }{
		{"not JSON", `{"tokens": [`, "not an auth file"},
		{"unknown field", `{"tokens": [{"name": "a", "secret": "12345678", "role": "read", "servces": ["x"]}]}`, "unknown field"},
		{"no name", `{"tokens": [{"secret": "12345678", "role": "read"}]}`, "token 1: name"},
		{"short secret", `{"tokens": [{"name": "a", "secret": "short", "role": "read"}]}`, `token 1 ("a"): secret must be at least 8`},
		{"duplicate name", `{"tokens": [{"name": "a", "secret": "12345678", "role": "read"}, {"name": "a", "secret": "87654321", "role": "read"}]}`, "used twice"},
		{"duplicate secret", `{"tokens": [{"name": "a", "secret": "12345678", "role": "read"}, {"name": "b", "secret": "12345678", "role": "read"}]}`, "another token's"},
		{"bad role", `{"tokens": [{"name": "a", "secret": "12345678", "role": "root"}]}`, `role "root"`},
		{"service without services", `{"tokens": [{"name": "a", "secret": "12345678", "role": "service"}]}`, "needs \"services\""},
		{"read with services", `{"tokens": [{"name": "a", "secret": "12345678", "role": "read", "services": ["x"]}]}`, "only for role"},
		{"bad pattern", `{"tokens": [{"name": "a", "secret": "12345678", "role": "service", "services": ["we*b"]}]}`, `pattern "we*b"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.file))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "12345678") {
				t.Fatalf("error %q shows a secret", err)
			}
		})
	}
}

func TestPermissions(t *testing.T) {
	set, err := Parse([]byte(sample))
	if err != nil {
		t.Fatal(err)
	}
	ops, web, dash := set.Lookup("s3cr3t-ops"), set.Lookup("s3cr3t-web"), set.Lookup("s3cr3t-dash")
	if ops == nil || web == nil || dash == nil || set.Lookup("s3cr3t-nope") != nil || set.Lookup("") != nil {
		t.Fatal("Lookup found the wrong tokens")
	}
	for _, tc := range []struct {
		tok     *Token
		perm    Perm
		service string
		want    bool
	}{
		{dash, PermRead, "", true},
		{dash, PermService, "web", false},
		{dash, PermAdmin, "", false},
		{web, PermRead, "", true},
		{web, PermService, "web", true},
		{web, PermService, "web-api", true},
		{web, PermService, "web-", true},
		{web, PermService, "webx", false},
		{web, PermService, "db", false},
		{web, PermService, "", false},
		{web, PermAdmin, "", false},
		{web, PermNode, "", false},
		{ops, PermService, "db", true},
		{ops, PermAdmin, "", true},
		{ops, PermNode, "", true},
		{dash, PermUnset, "", false},
	} {
		if got := tc.tok.Allows(tc.perm, tc.service); got != tc.want {
			t.Errorf("%s Allows(%s, %q) = %v, want %v", tc.tok, tc.perm, tc.service, got, tc.want)
		}
	}
	if s := web.String(); strings.Contains(s, "s3cr3t") {
		t.Errorf("String() %q shows the secret", s)
	}
}

func TestReloadKeepsTokensOfABrokenFileAndRevokesRemovedOnes(t *testing.T) {
	path := filepath.Join(t.TempDir(), "auth.json")
	if err := os.WriteFile(path, []byte(sample), 0o600); err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	s, err := Open(path, zerolog.New(&logs))
	if err != nil {
		t.Fatal(err)
	}
	web := s.Current().Lookup("s3cr3t-web")
	dash := s.Current().Lookup("s3cr3t-dash")
	webRevoked, dashRevoked := make(chan struct{}), make(chan struct{})
	s.Watch(web, func() { close(webRevoked) })
	stopDash := s.Watch(dash, func() { close(dashRevoked) })
	defer stopDash()

	os.WriteFile(path, []byte(`{"tokens": [`), 0o600)
	if err := s.Reload(); err == nil {
		t.Fatal("a broken file was accepted")
	}
	if s.Current().Lookup("s3cr3t-web") == nil {
		t.Fatal("a broken file dropped the tokens in force")
	}
	if !strings.Contains(logs.String(), "auth file refused") {
		t.Fatalf("no log line says the file was refused: %s", logs.String())
	}

	os.WriteFile(path, []byte(`{"tokens": [{"name": "dash", "secret": "s3cr3t-dash", "role": "read"},
		{"name": "new", "secret": "s3cr3t-new", "role": "read"}]}`), 0o600)
	if err := s.Reload(); err != nil {
		t.Fatal(err)
	}
	if s.Current().Lookup("s3cr3t-web") != nil || s.Current().Lookup("s3cr3t-new") == nil {
		t.Fatal("the reload did not take effect")
	}
	select {
	case <-webRevoked:
	default:
		t.Fatal("the removed token's watch was not revoked")
	}
	select {
	case <-dashRevoked:
		t.Fatal("a token that stayed was revoked")
	default:
	}
	if strings.Contains(logs.String(), "s3cr3t") {
		t.Fatalf("a secret was logged: %s", logs.String())
	}
}

// BenchmarkAuthorize is the per-request cost of auth on a heartbeat: find
// the token by its secret and check it against the route's permission.
func BenchmarkAuthorize(b *testing.B) {
	set, err := Parse([]byte(sample))
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		t := set.Lookup("s3cr3t-web")
		if t == nil || !t.Allows(PermService, "web-api") {
			b.Fatal("refused")
		}
	}
}
