package auth

import (
	"slices"
	"sync"
	"sync/atomic"

	"github.com/rs/zerolog"
)

// Store is the auth file in force. Reload swaps it atomically; readers take
// the current Set without a lock.
type Store struct {
	path string
	log  zerolog.Logger
	cur  atomic.Pointer[Set]

	mu       sync.Mutex
	watches  map[*watch]struct{}
	onReload []func(*Set)
}

type watch struct {
	token  *Token
	revoke func()
}

// Open loads the auth file at path; the node does not start without a valid
// one.
func Open(path string, log zerolog.Logger) (*Store, error) {
	set, err := ParseFile(path)
	if err != nil {
		return nil, err
	}
	s := NewStore(set, log)
	s.path = path
	return s, nil
}

// NewStore is a store of set that has no file (Reload keeps it).
func NewStore(set *Set, log zerolog.Logger) *Store {
	s := &Store{log: log, watches: map[*watch]struct{}{}}
	s.cur.Store(set)
	return s
}

// Current is the Set in force.
func (s *Store) Current() *Set { return s.cur.Load() }

// Path is the auth file's path.
func (s *Store) Path() string { return s.path }

// Reload reads the file again. A file that cannot be read or does not parse
// is refused with an error log line, and the tokens in force stay. On
// success, every watch whose token is gone or changed is revoked, and the
// OnReload functions run with the new Set.
func (s *Store) Reload() error {
	set, err := ParseFile(s.path)
	if err != nil {
		s.log.Error().Err(err).Str("auth_file", s.path).Msg("auth file refused; the tokens in force are kept")
		return err
	}
	s.Swap(set)
	s.log.Info().Str("auth_file", s.path).Int("tokens", len(set.tokens)).Msg("auth file reloaded")
	return nil
}

// Swap puts set in force, revokes the watches of tokens it no longer grants
// the same, and runs the OnReload functions.
func (s *Store) Swap(set *Set) {
	s.mu.Lock()
	s.cur.Store(set)
	var revoked []*watch
	for w := range s.watches {
		if nt := set.Lookup(w.token.Secret); nt == nil || !nt.same(w.token) {
			revoked = append(revoked, w)
			delete(s.watches, w)
		}
	}
	fns := slices.Clone(s.onReload)
	s.mu.Unlock()
	for _, w := range revoked {
		w.revoke()
	}
	for _, fn := range fns {
		fn(set)
	}
}

// Watch calls revoke once a reload no longer grants t (it was removed, or
// its role or services changed), so that a long-lived stream opened with it
// ends. The returned stop ends the watch.
func (s *Store) Watch(t *Token, revoke func()) (stop func()) {
	w := &watch{token: t, revoke: revoke}
	s.mu.Lock()
	// A reload between the caller's lookup and here is caught now.
	if nt := s.cur.Load().Lookup(t.Secret); nt == nil || !nt.same(t) {
		s.mu.Unlock()
		revoke()
		return func() {}
	}
	s.watches[w] = struct{}{}
	s.mu.Unlock()
	return func() {
		s.mu.Lock()
		delete(s.watches, w)
		s.mu.Unlock()
	}
}

// OnReload registers fn to run after each successful reload.
func (s *Store) OnReload(fn func(*Set)) {
	s.mu.Lock()
	s.onReload = append(s.onReload, fn)
	s.mu.Unlock()
}
