package auth

import (
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"
)

// Role is what a token may do.
type Role string

const (
	// RoleRead may read everything: every GET and stream.
	RoleRead Role = "read"
	// RoleService may read, and write the services it names.
	RoleService Role = "service"
	// RoleAdmin may do everything, membership included.
	RoleAdmin Role = "admin"
)

// Perm is what a route needs. Every route declares one; the zero value is no
// declaration, which the route table refuses.
type Perm uint8

const (
	// PermUnset is a route that declared nothing.
	PermUnset Perm = iota
	// PermOpen needs no token, even with auth on (liveness).
	PermOpen
	// PermRead needs any valid token.
	PermRead
	// PermService needs a service token naming the request's service, or
	// admin.
	PermService
	// PermAdmin needs an admin token.
	PermAdmin
	// PermNode needs another node of the cluster (a certificate from the
	// cluster's CA), or an admin token.
	PermNode
)

func (p Perm) String() string {
	switch p {
	case PermOpen:
		return "open"
	case PermRead:
		return "read"
	case PermService:
		return "service"
	case PermAdmin:
		return "admin"
	case PermNode:
		return "node"
	}
	return "unset"
}

// Token is one entry of the auth file.
type Token struct {
	Name   string `json:"name"`
	Secret string `json:"secret"`
	Role   Role   `json:"role"`
	// Services are the services a service token may write: a name, or a
	// prefix ending in "*" ("web-*"; "*" alone is every service).
	Services []string `json:"services,omitempty"`
}

// String names the token without its secret, for logs and errors.
func (t *Token) String() string { return fmt.Sprintf("%s (%s)", t.Name, t.Role) }

// Allows reports whether the token grants p on service (the request's
// {service}, empty when the route has none).
func (t *Token) Allows(p Perm, service string) bool {
	switch p {
	case PermOpen:
		return true
	case PermRead:
		return true
	case PermService:
		return t.Role == RoleAdmin || (t.Role == RoleService && service != "" && t.CoversService(service))
	case PermAdmin, PermNode:
		return t.Role == RoleAdmin
	}
	return false
}

// CoversService reports whether service matches one of the token's
// service patterns (always true for admin).
func (t *Token) CoversService(service string) bool {
	if t.Role == RoleAdmin {
		return true
	}
	for _, p := range t.Services {
		if prefix, ok := strings.CutSuffix(p, "*"); ok {
			if strings.HasPrefix(service, prefix) {
				return true
			}
		} else if p == service {
			return true
		}
	}
	return false
}

// same reports whether u grants exactly what t grants.
func (t *Token) same(u *Token) bool {
	return t.Name == u.Name && t.Role == u.Role && slices.Equal(t.Services, u.Services)
}

// File is the auth file's JSON.
type File struct {
	Tokens []Token `json:"tokens"`
}

// Set is a parsed, validated auth file. It is never changed once built, so
// it is read without locks.
type Set struct {
	tokens []*Token
	byHash map[[sha256.Size]byte]*entry
}

// entry is a token with its secret's SHA-256, computed once.
type entry struct {
	token *Token
	sum   [sha256.Size]byte
}

// Tokens lists the tokens in file order.
func (s *Set) Tokens() []*Token { return s.tokens }

// Lookup finds the token with this secret, or nil. The map is keyed by the
// secret's SHA-256, so the lookup takes no time that depends on how much of
// a guess matches a real secret, and the final comparison is constant-time.
func (s *Set) Lookup(secret string) *Token {
	if s == nil || secret == "" {
		return nil
	}
	h := sha256.Sum256([]byte(secret))
	e := s.byHash[h]
	if e == nil || subtle.ConstantTimeCompare(h[:], e.sum[:]) != 1 {
		return nil
	}
	return e.token
}

// FirstAdmin is the first admin token, nil if none.
func (s *Set) FirstAdmin() *Token {
	for _, t := range s.tokens {
		if t.Role == RoleAdmin {
			return t
		}
	}
	return nil
}

var (
	tokenNameRE = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,64}$`)
	patternRE   = regexp.MustCompile(`^[a-z0-9-]{0,63}\*?$`)
)

// Parse reads and validates an auth file's JSON. Its errors name the token
// (by position and name, never by secret) and what is wrong.
func Parse(b []byte) (*Set, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var f File
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf(`not an auth file {"tokens": [{"name", "secret", "role", "services"}]}: %v`, err)
	}
	if dec.More() {
		return nil, errors.New("auth file: text after the JSON object")
	}
	s := &Set{byHash: make(map[[sha256.Size]byte]*entry, len(f.Tokens))}
	names := map[string]bool{}
	for i := range f.Tokens {
		t := &f.Tokens[i]
		where := fmt.Sprintf("token %d", i+1)
		if t.Name != "" {
			where += fmt.Sprintf(" (%q)", t.Name)
		}
		if !tokenNameRE.MatchString(t.Name) {
			return nil, fmt.Errorf("%s: name must be 1-64 characters of [A-Za-z0-9_.-]", where)
		}
		if names[t.Name] {
			return nil, fmt.Errorf("%s: the name is used twice", where)
		}
		names[t.Name] = true
		if len(t.Secret) < 8 {
			return nil, fmt.Errorf("%s: secret must be at least 8 characters", where)
		}
		h := sha256.Sum256([]byte(t.Secret))
		if _, dup := s.byHash[h]; dup {
			return nil, fmt.Errorf("%s: its secret is another token's too", where)
		}
		switch t.Role {
		case RoleRead, RoleAdmin:
			if len(t.Services) > 0 {
				return nil, fmt.Errorf("%s: \"services\" is only for role %q", where, RoleService)
			}
		case RoleService:
			if len(t.Services) == 0 {
				return nil, fmt.Errorf("%s: role %q needs \"services\" (names, or prefixes ending in *)", where, RoleService)
			}
			for _, p := range t.Services {
				if p == "" || !patternRE.MatchString(p) {
					return nil, fmt.Errorf("%s: service pattern %q is not a service name ([a-z0-9-]+) with an optional trailing *", where, p)
				}
			}
		default:
			return nil, fmt.Errorf("%s: role %q is not one of read, service, admin", where, t.Role)
		}
		s.byHash[h] = &entry{token: t, sum: h}
		s.tokens = append(s.tokens, t)
	}
	return s, nil
}

// ParseFile reads and parses the auth file at path.
func ParseFile(path string) (*Set, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	s, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return s, nil
}
