package httpapi

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"

	"github.com/discoverd/discoverd/api"
	"github.com/discoverd/discoverd/auth"
)

// guard wraps a route's handler with the permission the route table
// declares for it, so no handler checks tokens itself. A route without a
// permission is a programming error, refused when the table is built.
//
// With auth on, a request passes as:
//   - anyone, on a PermOpen route;
//   - another node, when it carries a certificate verified against the
//     cluster's CA and the node-to-node marker header (a proxy strips that
//     header from what it relays, so a caller's request relayed by a proxy
//     is judged by the caller's own token, never by the proxy's
//     certificate);
//   - else the holder of its bearer token, within the token's role.
//
// A stream opened with a token ends when a reload stops granting that token.
func (h *handler) guard(rt route) http.HandlerFunc {
	if rt.perm == auth.PermUnset {
		panic(fmt.Sprintf("httpapi: route %s %s declares no permission", rt.method, rt.path))
	}
	if h.auth == nil || rt.perm == auth.PermOpen {
		return rt.fn
	}
	alwaysStream := rt.method == http.MethodGet && rt.path == "/services/{service}"
	return func(w http.ResponseWriter, r *http.Request) {
		if fromNode(r) {
			rt.fn(w, r)
			return
		}
		secret, ok := bearer(r)
		if !ok {
			w.Header().Set("WWW-Authenticate", `Bearer realm="discoverd"`)
			h.fail(w, api.Errorf(api.CodeUnauthorized, "%s %s needs a token: send the header Authorization: Bearer <secret>", r.Method, r.URL.Path))
			return
		}
		tok := h.auth.Current().Lookup(secret)
		if tok == nil {
			w.Header().Set("WWW-Authenticate", `Bearer realm="discoverd", error="invalid_token"`)
			h.fail(w, api.Errorf(api.CodeUnauthorized, "the bearer token is not known to this node"))
			return
		}
		service := r.PathValue("service")
		if !tok.Allows(rt.perm, service) {
			h.fail(w, forbidden(tok, rt.perm, r, service))
			return
		}
		if rt.method == http.MethodGet && (alwaysStream || wantsStream(r)) {
			// A stream served by this handler ends with its context; one
			// handed to its own goroutines (an HTTP/1 event stream) is
			// closed through revocable, which finds the token here.
			ctx, cancel := context.WithCancel(context.WithValue(r.Context(), tokenKey{}, tok))
			stop := h.auth.Watch(tok, cancel)
			defer stop()
			defer cancel()
			r = r.WithContext(ctx)
		}
		rt.fn(w, r)
	}
}

// tokenKey holds a stream request's token in its context.
type tokenKey struct{}

// revocable returns st closed as soon as a reload stops granting the token
// that opened it (st itself when auth is off): a stream may outlive its
// handler.
func (h *handler) revocable(r *http.Request, st Stream) Stream {
	if h.auth == nil {
		return st
	}
	tok, _ := r.Context().Value(tokenKey{}).(*auth.Token)
	if tok == nil {
		return st
	}
	rs := &revocableStream{Stream: st}
	rs.stop = h.auth.Watch(tok, func() { st.Close() })
	return rs
}

// revocableStream ends its token's watch when it is closed.
type revocableStream struct {
	Stream
	stop func()
	once sync.Once
}

func (s *revocableStream) Close() {
	s.once.Do(s.stop)
	s.Stream.Close()
}

func forbidden(tok *auth.Token, perm auth.Perm, r *http.Request, service string) error {
	var need string
	switch perm {
	case auth.PermService:
		need = fmt.Sprintf("a service token naming %q, or admin", service)
	case auth.PermNode:
		need = "another node of the cluster, or admin"
	default:
		need = "an admin token"
	}
	return api.Errorf(api.CodeForbidden, "token %q (role %s) may not %s %s: it needs %s", tok.Name, tok.Role, r.Method, r.URL.Path, need)
}

// bearer is the secret of an "Authorization: Bearer <secret>" header.
func bearer(r *http.Request) (string, bool) {
	v := r.Header.Get("Authorization")
	if len(v) < 7 || !strings.EqualFold(v[:7], "bearer ") {
		return "", false
	}
	s := strings.TrimSpace(v[7:])
	return s, s != ""
}

// fromNode reports whether r comes from another node: its TLS client
// certificate was verified against the cluster's CA and it carries the
// marker that nodes set on their own requests.
func fromNode(r *http.Request) bool {
	return r.TLS != nil && len(r.TLS.VerifiedChains) > 0 && r.Header.Get(api.ForwardedHeader) != ""
}
