package dirlock

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// FileName is the lock file in the data dir. It holds the process id of the
// holder, for the error message of the next one; the lock itself is the
// kernel's, so it goes away with the process however it ends (kill -9
// included) and a stale file never blocks a start.
const FileName = "LOCK"

// ErrInUse is wrapped by the error of Acquire when another process holds the
// directory.
var ErrInUse = errors.New("in use by another process")

// Lock is a held data dir lock.
type Lock struct {
	f *os.File
}

// Acquire locks dir for this process, without waiting: when another process
// (or another node in this process) holds it, it fails at once with an
// error naming the directory.
func Acquire(dir string) (*Lock, error) {
	path := filepath.Join(dir, FileName)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("data dir %s: opening lock file: %w", dir, err)
	}
	if err := lockFile(f); err != nil {
		holder := ""
		if b, rerr := os.ReadFile(path); rerr == nil {
			if pid, perr := strconv.Atoi(strings.TrimSpace(string(b))); perr == nil && pid > 0 {
				holder = fmt.Sprintf(" (pid %d)", pid)
			}
		}
		f.Close()
		if errors.Is(err, errWouldBlock) {
			return nil, fmt.Errorf("data dir %s is %w%s: is another discoverd running on it? (lock file %s)", dir, ErrInUse, holder, path)
		}
		return nil, fmt.Errorf("data dir %s: locking %s: %w", dir, path, err)
	}
	// The pid is only a hint for people; failing to write it is no reason
	// not to run.
	if err := f.Truncate(0); err == nil {
		f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return &Lock{f: f}, nil
}

// Release unlocks the directory. The file stays: removing it could let a
// process that opened it just before lock a file no longer in the
// directory.
func (l *Lock) Release() error {
	if l == nil || l.f == nil {
		return nil
	}
	err := unlockFile(l.f)
	if cerr := l.f.Close(); err == nil {
		err = cerr
	}
	l.f = nil
	return err
}
