//go:build !unix

package dirlock

import (
	"errors"
	"os"
)

var errWouldBlock = errors.New("would block")

// lockFile does nothing where flock is missing: the Raft store's own lock
// (with its open timeout) is the only guard there.
func lockFile(*os.File) error { return nil }

func unlockFile(*os.File) error { return nil }
