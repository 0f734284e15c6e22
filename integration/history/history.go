// Package history records what clients did to a discoverd cluster and checks
// it: the operations (each with its invocation time, completion time and
// result) against a model of the registry with porcupine, the linearizability
// checker etcd's robustness tests use; and the event streams watchers saw
// (indexes that only go up, final views equal to the cluster's state, every
// node reporting the same service leader at each Raft index).
//
// The operations are recorded below the Go client, by an http.RoundTripper
// (Transport): every HTTP request the client sends, including each retry and
// each attempt on another server, is one operation, so the history holds what
// the servers were really asked and really answered.
package history

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/discoverd/discoverd/api"
)

// Kind is what an operation does.
type Kind uint8

const (
	// Register is PUT /services/{s}/instances/{id}: a registration or a
	// heartbeat; the answer is the stored instance with its index.
	Register Kind = iota + 1
	// Deregister is DELETE /services/{s}/instances/{id}.
	Deregister
	// ReadInstances is GET /services/{s}/instances?consistent=true.
	ReadInstances
	// SetMeta is PUT /services/{s}/meta, compare-and-set on the index.
	SetMeta
	// GetMeta is GET /services/{s}/meta?consistent=true.
	GetMeta
)

func (k Kind) String() string {
	switch k {
	case Register:
		return "register"
	case Deregister:
		return "deregister"
	case ReadInstances:
		return "read-instances"
	case SetMeta:
		return "set-meta"
	case GetMeta:
		return "get-meta"
	}
	return fmt.Sprintf("kind(%d)", k)
}

// Outcome says what is known of an operation's effect.
type Outcome uint8

const (
	// OK: the server acknowledged it (2xx).
	OK Outcome = iota + 1
	// Failed: the server answered with a definite error (4xx: not found,
	// exists, precondition failed, validation); it changed nothing.
	Failed
	// Unknown: no answer, or a 5xx (e.g. leadership lost while the entry was
	// in flight): the write may or may not have taken effect, now or later.
	Unknown
)

func (o Outcome) String() string {
	switch o {
	case OK:
		return "ok"
	case Failed:
		return "failed"
	case Unknown:
		return "unknown"
	}
	return "?"
}

// Inst is an instance as an operation saw it.
type Inst struct {
	ID    string
	Index uint64
	// Reg is the registration's fingerprint: addr, proto and meta.
	Reg string
}

// Op is one operation of the history.
type Op struct {
	// Client is the recording client's number (porcupine's client id).
	Client int
	// Node is the server (host:port) the request was sent to.
	Node    string
	Kind    Kind
	Service string
	// Instance is the id of a Register or Deregister.
	Instance string
	// Reg is the registration a Register sends (Inst.Reg).
	Reg string
	// MetaData is the data a SetMeta writes or a GetMeta read (compact JSON).
	MetaData string
	// MetaExpect is the index a SetMeta compares with (0: create).
	MetaExpect uint64

	Call, Return time.Time
	Outcome      Outcome
	// Code is the error code of a Failed or Unknown operation.
	Code api.ErrorCode
	// Err describes a failure.
	Err string

	// Index is, on OK: a Register's instance index, a SetMeta's new meta
	// index, a GetMeta's meta index. (A GetMeta of a service without meta
	// is Failed with object_not_found.)
	Index uint64
	// Instances is a ReadInstances' answer, or the instance a Register's
	// answer holds.
	Instances []Inst
}

func (o *Op) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "#%d %s %s", o.Client, o.Kind, o.Service)
	switch o.Kind {
	case Register:
		fmt.Fprintf(&b, "/%s [%s]", o.Instance, o.Reg)
	case Deregister:
		fmt.Fprintf(&b, "/%s", o.Instance)
	case SetMeta:
		fmt.Fprintf(&b, " %s if index=%d", o.MetaData, o.MetaExpect)
	}
	fmt.Fprintf(&b, " via %s -> %s", o.Node, o.Outcome)
	switch {
	case o.Outcome != OK:
		fmt.Fprintf(&b, " %s %s", o.Code, o.Err)
	case o.Kind == ReadInstances:
		ids := make([]string, len(o.Instances))
		for i, in := range o.Instances {
			ids[i] = fmt.Sprintf("%s@%d", in.ID, in.Index)
		}
		fmt.Fprintf(&b, " [%s]", strings.Join(ids, " "))
	case o.Kind == GetMeta:
		fmt.Fprintf(&b, " %s@%d", o.MetaData, o.Index)
	default:
		fmt.Fprintf(&b, " index %d", o.Index)
	}
	fmt.Fprintf(&b, " (%s +%v)", o.Call.Format("15:04:05.000"), o.Return.Sub(o.Call).Round(time.Millisecond))
	return b.String()
}

// Fingerprint is the Reg of an instance: its addr, proto and meta.
func Fingerprint(in *api.Instance) string {
	keys := slices.Sorted(maps.Keys(in.Meta))
	var b strings.Builder
	b.WriteString(in.Addr)
	b.WriteByte('|')
	b.WriteString(in.Proto)
	for _, k := range keys {
		b.WriteByte('|')
		b.WriteString(k)
		b.WriteByte('=')
		b.WriteString(in.Meta[k])
	}
	return b.String()
}

// Recorder collects operations from any number of goroutines.
type Recorder struct {
	// Proxies are the hosts (host:port) of proxy nodes. A proxy retries a
	// request on another voter when one fails and relays the last answer,
	// so its refusals never prove that nothing was applied (see
	// RefusedBeforeApply).
	Proxies map[string]bool

	mu  sync.Mutex
	ops []Op
}

// RefusedBeforeApply reports whether a voter's service_unavailable answer
// says the write was refused before anything was appended to the Raft log
// or forwarded (node.noLeaderError, the catching-up and deadline checks), so
// that it certainly had no effect. Every other failure may have taken effect.
// The messages are the server's (node/registry.go, node/voter.go).
func RefusedBeforeApply(code api.ErrorCode, msg string) bool {
	if code != api.CodeUnavailable {
		return false
	}
	for _, prefix := range []string{
		"no raft leader is known to this node",
		"this node is not the raft leader (the leader is ",
		"this node is catching up with the raft log after starting",
		"request deadline passed before the write was sent",
		"this proxy knows no voter to forward to",
	} {
		if strings.HasPrefix(msg, prefix) {
			return true
		}
	}
	return false
}

// Add records one operation.
func (r *Recorder) Add(op Op) {
	r.mu.Lock()
	r.ops = append(r.ops, op)
	r.mu.Unlock()
}

// Ops returns a copy of the operations recorded so far, by invocation time.
func (r *Recorder) Ops() []Op {
	r.mu.Lock()
	out := slices.Clone(r.ops)
	r.mu.Unlock()
	slices.SortStableFunc(out, func(a, b Op) int { return a.Call.Compare(b.Call) })
	return out
}

// Transport returns an http.RoundTripper that sends requests with base and
// records, as client number client, every request that is one of the
// operations of Kind. Event streams, reads that are not consistent and other
// routes pass through unrecorded. A request that never reached a server (the
// connection could not be made) is not recorded: it had no effect.
func (r *Recorder) Transport(base http.RoundTripper, client int) http.RoundTripper {
	if base == nil {
		base = http.DefaultTransport
	}
	return &transport{base: base, rec: r, client: client}
}

type transport struct {
	base   http.RoundTripper
	rec    *Recorder
	client int
}

// classify names the operation a request is, or 0.
func classify(req *http.Request) (Kind, string, string) {
	if strings.Contains(req.Header.Get("Accept"), "text/event-stream") {
		return 0, "", ""
	}
	parts := strings.Split(strings.Trim(req.URL.Path, "/"), "/")
	if len(parts) < 3 || parts[0] != "services" {
		return 0, "", ""
	}
	service := parts[1]
	consistent := req.URL.Query().Get("consistent") == "true"
	switch {
	case len(parts) == 4 && parts[2] == "instances" && req.Method == http.MethodPut:
		return Register, service, parts[3]
	case len(parts) == 4 && parts[2] == "instances" && req.Method == http.MethodDelete:
		return Deregister, service, parts[3]
	case len(parts) == 3 && parts[2] == "instances" && req.Method == http.MethodGet && consistent:
		return ReadInstances, service, ""
	case len(parts) == 3 && parts[2] == "meta" && req.Method == http.MethodPut:
		return SetMeta, service, ""
	case len(parts) == 3 && parts[2] == "meta" && req.Method == http.MethodGet && consistent:
		return GetMeta, service, ""
	}
	return 0, "", ""
}

func (t *transport) RoundTrip(req *http.Request) (*http.Response, error) {
	kind, service, id := classify(req)
	if kind == 0 {
		return t.base.RoundTrip(req)
	}
	op := Op{Client: t.client, Node: req.URL.Host, Kind: kind, Service: service, Instance: id}
	if req.Body != nil && req.GetBody != nil {
		if body, err := req.GetBody(); err == nil {
			b, _ := io.ReadAll(body)
			body.Close()
			if err := op.parseRequest(b); err != nil {
				return nil, err
			}
		}
	}
	op.Call = time.Now()
	resp, err := t.base.RoundTrip(req)
	if err != nil {
		op.Return = time.Now()
		// A request that never reached a server, or a read that failed,
		// tells nothing: it is left out.
		if notSent(err) || kind == ReadInstances || kind == GetMeta {
			return nil, err
		}
		op.Outcome, op.Code, op.Err = Unknown, api.CodeUnavailable, err.Error()
		t.rec.Add(op)
		return nil, err
	}
	b, rerr := io.ReadAll(resp.Body)
	resp.Body.Close()
	op.Return = time.Now()
	resp.Body = io.NopCloser(bytes.NewReader(b))
	switch {
	case rerr != nil:
		op.Outcome, op.Code, op.Err = Unknown, api.CodeUnavailable, "reading the answer: "+rerr.Error()
	case resp.StatusCode/100 == 2:
		if err := op.parseAnswer(b); err != nil {
			op.Outcome, op.Code, op.Err = Unknown, api.CodeUnknown, err.Error()
		} else {
			op.Outcome = OK
		}
	default:
		var e api.Error
		_ = json.Unmarshal(b, &e)
		op.Code, op.Err = e.Code, e.Message
		if op.Code == "" {
			op.Code, op.Err = api.CodeUnknown, fmt.Sprintf("%s: %.200s", resp.Status, b)
		}
		switch {
		case resp.StatusCode/100 == 4:
			op.Outcome = Failed
		case RefusedBeforeApply(op.Code, op.Err) && (!t.rec.Proxies[op.Node] || strings.HasPrefix(op.Err, "this proxy knows no voter")):
			op.Outcome = Failed
		default:
			op.Outcome = Unknown
		}
	}
	// A read that failed tells nothing: it is left out.
	if (kind == ReadInstances || kind == GetMeta) && op.Outcome == Unknown {
		return resp, nil
	}
	t.rec.Add(op)
	return resp, nil
}

// notSent reports whether a request failed before reaching any server.
func notSent(err error) bool {
	var oe *net.OpError
	return errors.As(err, &oe) && oe.Op == "dial"
}

func (o *Op) parseRequest(b []byte) error {
	switch o.Kind {
	case Register:
		var in api.Instance
		if err := json.Unmarshal(b, &in); err != nil {
			return fmt.Errorf("history: register body %q: %w", b, err)
		}
		o.Reg = Fingerprint(&in)
	case SetMeta:
		var m api.ServiceMeta
		if err := json.Unmarshal(b, &m); err != nil {
			return fmt.Errorf("history: meta body %q: %w", b, err)
		}
		o.MetaData, o.MetaExpect = compact(m.Data), m.Index
	}
	return nil
}

func (o *Op) parseAnswer(b []byte) error {
	switch o.Kind {
	case Register:
		var in api.Instance
		if err := json.Unmarshal(b, &in); err != nil {
			return fmt.Errorf("register answer %.200q: %w", b, err)
		}
		if in.ID != o.Instance || in.Index == 0 {
			return fmt.Errorf("register answer %.200q is not instance %s with an index", b, o.Instance)
		}
		o.Index = in.Index
		o.Instances = []Inst{{ID: in.ID, Index: in.Index, Reg: Fingerprint(&in)}}
	case ReadInstances:
		var list []*api.Instance
		if err := json.Unmarshal(b, &list); err != nil {
			return fmt.Errorf("instances answer %.200q: %w", b, err)
		}
		o.Instances = make([]Inst, 0, len(list))
		for _, in := range list {
			o.Instances = append(o.Instances, Inst{ID: in.ID, Index: in.Index, Reg: Fingerprint(in)})
		}
	case SetMeta, GetMeta:
		var m api.ServiceMeta
		if err := json.Unmarshal(b, &m); err != nil {
			return fmt.Errorf("meta answer %.200q: %w", b, err)
		}
		if o.Kind == GetMeta {
			o.MetaData = compact(m.Data)
		}
		o.Index = m.Index
	}
	return nil
}

// savedHistory is the file format of WriteFile.
type savedHistory struct {
	Settled time.Time `json:"settled"`
	Ops     []Op      `json:"ops"`
}

// WriteFile saves a history (and the time it settled, if known) as JSON,
// for TestCheckFile.
func WriteFile(path string, ops []Op, settled time.Time) error {
	b, err := json.Marshal(savedHistory{Settled: settled, Ops: ops})
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o644)
}

// ReadFile loads a history saved by WriteFile.
func ReadFile(path string) ([]Op, time.Time, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, time.Time{}, err
	}
	var h savedHistory
	if err := json.Unmarshal(b, &h); err != nil {
		return nil, time.Time{}, fmt.Errorf("%s: %w", path, err)
	}
	return h.Ops, h.Settled, nil
}

func compact(raw json.RawMessage) string {
	var b bytes.Buffer
	if err := json.Compact(&b, raw); err != nil {
		return string(raw)
	}
	return b.String()
}
