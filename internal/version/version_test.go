package version

import (
	"strings"
	"testing"
)

func TestResolve(t *testing.T) {
	for _, tc := range []struct {
		name     string
		set      string
		settings map[string]string
		want     string
	}{
		{"set at build", "v1.2.3", map[string]string{"vcs.revision": "0123456789abcdef"}, "v1.2.3"},
		{"revision", "", map[string]string{"vcs.revision": "0123456789abcdef", "vcs.modified": "false"}, "devel+0123456789ab"},
		{"dirty", "", map[string]string{"vcs.revision": "0123456789abcdef", "vcs.modified": "true"}, "devel+0123456789ab-dirty"},
		{"no build info", "", nil, "devel"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := resolve(tc.set, tc.settings); got != tc.want {
				t.Fatalf("resolve = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestString(t *testing.T) {
	s := String("discoverd")
	if !strings.HasPrefix(s, "discoverd "+Get()+" (go") {
		t.Fatalf("String = %q", s)
	}
}
