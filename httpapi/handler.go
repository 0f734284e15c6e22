package httpapi

import (
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"runtime/debug"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/discoverd/discoverd/api"
	"github.com/discoverd/discoverd/auth"
	"github.com/discoverd/discoverd/ui"
)

// MaxBodyBytes bounds every request body.
const MaxBodyBytes = 1 << 20

// DefaultKeepAlive is the SSE comment interval when Options leaves it zero.
const DefaultKeepAlive = 30 * time.Second

// Options configures the handler.
type Options struct {
	// Log receives panics and server-side (5xx) failures. The zero value
	// discards them.
	Log zerolog.Logger
	// KeepAlive is how long an SSE stream stays silent before a comment line
	// is sent to keep it open (default 30s).
	KeepAlive time.Duration
	// Auth holds the tokens; nil serves every route to anyone. See guard.go.
	Auth *auth.Store
	// PeerTLS, when set, is how a proxy reaches voters: HTTPS with this
	// node's certificate (the voter still judges each request by its
	// caller's token).
	PeerTLS *tls.Config
}

type handler struct {
	b         Backend
	log       zerolog.Logger
	keepAlive time.Duration
	auth      *auth.Store
	mux       *http.ServeMux
	// probe holds the routes' paths without methods: a request that matches
	// none of mux's routes but one of probe's used the wrong method.
	probe *http.ServeMux
	allow map[string]string
	// routes is the route table, as registered.
	routes []route
	// metricsHTTP serves GET /metrics from the backend's registry.
	metricsHTTP http.Handler
	// raw writes the HTTP/1.1 event streams (sse_pool.go).
	raw *rawPool

	// index caches the formatted Discoverd-Index header value of the last
	// index answered, as most responses in a row carry the same one.
	index atomic.Pointer[indexValue]
}

type indexValue struct {
	index uint64
	value []string
}

// New returns the HTTP API over b. When b also implements Cluster (a voter
// node does), the membership routes under /raft/ are served too.
func New(b Backend, opts Options) http.Handler {
	h := &handler{
		b:         b,
		log:       opts.Log,
		keepAlive: opts.KeepAlive,
		auth:      opts.Auth,
		mux:       http.NewServeMux(),
		probe:     http.NewServeMux(),
		allow:     make(map[string]string),
	}
	if h.keepAlive <= 0 {
		h.keepAlive = DefaultKeepAlive
	}
	h.raw = newRawPool(h.keepAlive)
	h.metricsHTTP = newMetricsHandler(b, h.log)
	page := ui.New(uiBackend(b))
	routes := []route{
		{"GET", "/services", auth.PermRead, h.getServices},
		{"PUT", "/services/{service}", auth.PermService, h.putService},
		{"DELETE", "/services/{service}", auth.PermService, h.deleteService},
		{"GET", "/services/{service}", auth.PermRead, h.streamService},
		{"GET", "/services/{service}/instances", auth.PermRead, h.getInstances},
		{"PUT", "/services/{service}/instances/{id}", auth.PermService, h.putInstance},
		{"DELETE", "/services/{service}/instances/{id}", auth.PermService, h.deleteInstance},
		{"GET", "/services/{service}/leader", auth.PermRead, h.getLeader},
		{"PUT", "/services/{service}/leader", auth.PermService, h.putLeader},
		{"GET", "/services/{service}/meta", auth.PermRead, h.getMeta},
		{"PUT", "/services/{service}/meta", auth.PermService, h.putMeta},
		{"GET", "/ping", auth.PermOpen, h.ping},
		// Open, as load balancers and container health checks probe it: it
		// carries the node's health and role, no registry data.
		{"GET", "/.well-known/status", auth.PermOpen, h.status},
		{"GET", "/metrics", auth.PermRead, h.metrics},
		// The root sends a browser to the page; the page's files hold no
		// data and load without a token (the page then asks for one).
		{"GET", "/{$}", auth.PermOpen, h.root},
		{"GET", ui.Prefix, auth.PermOpen, page.Files},
		{"GET", ui.ClusterPath, auth.PermRead, page.Cluster},
	}
	if c, ok := b.(Cluster); ok {
		routes = append(routes, h.clusterRoutes(c)...)
	}
	h.routes = routes
	for _, r := range routes {
		h.mux.HandleFunc(r.method+" "+r.path, h.guard(r))
		methods, seen := h.allow[r.path]
		if !seen {
			h.probe.Handle(r.path, http.NotFoundHandler())
		} else {
			methods += ", "
		}
		methods += r.method
		if r.method == "GET" {
			methods += ", HEAD"
		}
		h.allow[r.path] = methods
	}
	h.mux.HandleFunc("/", h.fallback)
	return h
}

// ServeHTTP sets Discoverd-Index, recovers from panics and routes.
func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	defer func() {
		if v := recover(); v != nil {
			h.recovered(w, r, v)
		}
	}()
	h.setIndex(w, 0)
	h.mux.ServeHTTP(w, r)
}

func (h *handler) recovered(w http.ResponseWriter, r *http.Request, v any) {
	if v == http.ErrAbortHandler {
		panic(v)
	}
	h.log.Error().Str("method", r.Method).Str("path", r.URL.Path).
		Str("panic", fmt.Sprint(v)).Bytes("stack", debug.Stack()).
		Msg("panic in HTTP handler")
	e := &api.Error{Code: api.CodeUnknown, Message: "internal error: the server failed to handle the request"}
	if w.Header().Get("Content-Type") == sseContentType {
		// The stream's headers are already out: end it with an error event.
		bp := getBuf()
		*bp = appendSSEError((*bp)[:0], e)
		_, _ = w.Write(*bp)
		putBuf(bp)
		return
	}
	h.writeError(w, e, 0)
}

// fallback answers every request no route takes: 405 when the path is a
// route's with another method, else 404. Both as JSON errors.
func (h *handler) fallback(w http.ResponseWriter, r *http.Request) {
	if _, pattern := h.probe.Handler(r); pattern != "" {
		if methods, ok := h.allow[pattern]; ok {
			w.Header().Set("Allow", methods)
			h.writeErrorStatus(w, http.StatusMethodNotAllowed,
				api.Errorf(api.CodeValidation, "method %s is not allowed on %s; allowed: %s", r.Method, r.URL.Path, methods))
			return
		}
	}
	h.writeError(w, api.Errorf(api.CodeNotFound, "no route for %s %s", r.Method, r.URL.Path), 0)
}

// setIndex sets Discoverd-Index to the larger of the applied index and idx.
func (h *handler) setIndex(w http.ResponseWriter, idx uint64) {
	if a := h.b.AppliedIndex(); a > idx {
		idx = a
	}
	v := h.index.Load()
	if v == nil || v.index != idx {
		// The slice is shared by every response with this index: the header
		// map is only ever replaced, never appended to in place (its
		// capacity is 1, so an Add would copy it).
		v = &indexValue{index: idx, value: []string{strconv.FormatUint(idx, 10)}}
		h.index.Store(v)
	}
	w.Header()[api.IndexHeader] = v.value
}

var jsonContentType = []string{"application/json"}

// newline ends every JSON body, as the output of a JSON command-line tool
// ends: callers append it to their pooled buffer, and writeBody adds it to a
// body that lacks it.
var newline = []byte{'\n'}

// writeBody writes a complete JSON body, ending with a newline. Every JSON
// answer goes through it (the instances list writes its own chunks, and
// ends with "]\n"); a missing newline is a second Write into the response's
// buffer, not a copy of the body.
func writeBody(w http.ResponseWriter, status int, body []byte) {
	w.Header()["Content-Type"] = jsonContentType
	w.WriteHeader(status)
	_, _ = w.Write(body)
	if len(body) > 0 && body[len(body)-1] != '\n' {
		_, _ = w.Write(newline)
	}
}

// writeError answers err as an api.Error JSON body with its status, with
// Discoverd-Index at least idx.
func (h *handler) writeError(w http.ResponseWriter, err error, idx uint64) {
	e := api.AsError(err)
	if idx > 0 {
		h.setIndex(w, idx)
	}
	h.writeErrorStatus(w, e.Status(), e)
}

func (h *handler) writeErrorStatus(w http.ResponseWriter, status int, e *api.Error) {
	if status >= 500 && e.Code != api.CodeUnavailable {
		h.log.Warn().Str("code", string(e.Code)).Str("message", e.Message).Msg("request failed")
	}
	bp := getBuf()
	b := appendError((*bp)[:0], e)
	b = append(b, '\n')
	writeBody(w, status, b)
	*bp = b
	putBuf(bp)
}

// fail answers a request that failed before any write reached the backend.
func (h *handler) fail(w http.ResponseWriter, err error) { h.writeError(w, err, 0) }

// service returns the request's validated {service}.
func (h *handler) service(w http.ResponseWriter, r *http.Request) (string, bool) {
	name := r.PathValue("service")
	if err := api.ValidateServiceName(name); err != nil {
		h.fail(w, err)
		return "", false
	}
	return name, true
}

// read prepares a read: with ?consistent=true it first waits for the local
// state to catch up with the leader, then sets Discoverd-Index to the index
// the read will see at least.
func (h *handler) read(w http.ResponseWriter, r *http.Request) bool {
	if r.URL.RawQuery == "" {
		return true
	}
	q := r.URL.Query()
	if !q.Has("consistent") {
		return true
	}
	consistent := true
	if v := q.Get("consistent"); v != "" {
		var err error
		if consistent, err = strconv.ParseBool(v); err != nil {
			h.fail(w, api.Errorf(api.CodeValidation, "query parameter consistent=%q is not a boolean (true or false)", v))
			return false
		}
	}
	if !consistent {
		return true
	}
	if err := h.b.Consistent(r.Context()); err != nil {
		h.fail(w, err)
		return false
	}
	h.setIndex(w, 0)
	return true
}

// decodeBody reads the request body, at most MaxBodyBytes, and decodes it as
// JSON into v. what names the expected body in error messages. An empty body
// leaves v alone and reports empty.
func (h *handler) decodeBody(w http.ResponseWriter, r *http.Request, v any, what string) (empty bool, err error) {
	if r.ContentLength > MaxBodyBytes {
		return false, errBodyTooLarge(r.ContentLength)
	}
	bp := getBuf()
	defer putBuf(bp)
	b := (*bp)[:0]
	if n := r.ContentLength; n > 0 && int(n) > cap(b) {
		b = make([]byte, 0, n+1)
	}
	b, err = readAll(http.MaxBytesReader(w, r.Body, MaxBodyBytes), b)
	*bp = b
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return false, errBodyTooLarge(-1)
		}
		return false, api.Errorf(api.CodeValidation, "reading the request body failed: %v", err)
	}
	if isBlank(b) {
		return true, nil
	}
	if inst, ok := v.(*api.Instance); ok {
		err = api.DecodeInstance(b, inst)
	} else {
		err = json.Unmarshal(b, v)
	}
	if err != nil {
		return false, jsonError(err, what)
	}
	return false, nil
}

// bodyTooLarge is a validation_error answered with 413, not 400.
type bodyTooLarge struct{ e *api.Error }

func (t bodyTooLarge) Error() string { return t.e.Error() }

func errBodyTooLarge(n int64) error {
	msg := fmt.Sprintf("request body is larger than the limit of %d bytes", MaxBodyBytes)
	if n > 0 {
		msg = fmt.Sprintf("request body is %d bytes, larger than the limit of %d bytes", n, MaxBodyBytes)
	}
	return bodyTooLarge{&api.Error{Code: api.CodeValidation, Message: msg}}
}

// failBody answers a decodeBody error: 413 for a body too large, else 400.
func (h *handler) failBody(w http.ResponseWriter, err error) {
	var tl bodyTooLarge
	if errors.As(err, &tl) {
		h.writeErrorStatus(w, http.StatusRequestEntityTooLarge, tl.e)
		return
	}
	h.fail(w, err)
}

func isBlank(b []byte) bool {
	for _, c := range b {
		if c != ' ' && c != '\t' && c != '\n' && c != '\r' {
			return false
		}
	}
	return true
}

func readAll(r io.Reader, b []byte) ([]byte, error) {
	for {
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)]
		}
		n, err := r.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if err != nil {
			if err == io.EOF {
				err = nil
			}
			return b, err
		}
	}
}

// jsonError turns a json.Unmarshal error into a validation_error that says
// what is wrong and where.
func jsonError(err error, what string) error {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		return api.Errorf(api.CodeValidation, "malformed JSON in request body: %s at byte %d (expected %s)", se.Error(), se.Offset, what)
	case errors.As(err, &te):
		if te.Field == "" {
			return api.Errorf(api.CodeValidation, "request body is a JSON %s; expected %s", te.Value, what)
		}
		return api.Errorf(api.CodeValidation, "request body field %q: found a JSON %s where a %s is expected (at byte %d)", te.Field, te.Value, jsonTypeName(te.Type.String()), te.Offset)
	}
	return api.Errorf(api.CodeValidation, "invalid request body (expected %s): %v", what, err)
}

func jsonTypeName(goType string) string {
	switch {
	case goType == "string", strings.HasSuffix(goType, "LeaderType"), strings.HasSuffix(goType, "EventKind"):
		return "string"
	case strings.HasPrefix(goType, "map["):
		return "JSON object"
	case strings.HasPrefix(goType, "uint"), strings.HasPrefix(goType, "int"):
		return "non-negative integer"
	case goType == "bool":
		return "boolean"
	}
	return goType
}
