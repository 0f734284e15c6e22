package version

import (
	"runtime"
	"runtime/debug"
	"sync"
)

// Version is set at build time:
//
//	go build -ldflags "-X github.com/discoverd/discoverd/internal/version.Version=v1.2.3" ./cmd/...
//
// `make build` and scripts/cluster.sh (which builds the Docker image's
// binaries) set it from `git describe`. Left empty, Get falls back to the
// VCS revision Go records in the binary's build info.
var Version string

var (
	once     sync.Once
	resolved string
)

// Get returns the version of this binary: the one set at build time, else
// "devel+<revision>" (with "-dirty" for uncommitted changes) from the build
// info, else "devel".
func Get() string {
	once.Do(func() { resolved = resolve(Version, readBuildInfo()) })
	return resolved
}

func readBuildInfo() map[string]string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return nil
	}
	settings := make(map[string]string, len(info.Settings))
	for _, s := range info.Settings {
		settings[s.Key] = s.Value
	}
	return settings
}

// resolve picks the version from the build-time value and the build info's
// settings (vcs.revision, vcs.modified).
func resolve(set string, settings map[string]string) string {
	if set != "" {
		return set
	}
	rev := settings["vcs.revision"]
	if rev == "" {
		return "devel"
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if settings["vcs.modified"] == "true" {
		rev += "-dirty"
	}
	return "devel+" + rev
}

// String is the line `--version` prints: the program, its version and the
// Go release it was built with.
func String(program string) string {
	return program + " " + Get() + " (" + runtime.Version() + ")"
}
