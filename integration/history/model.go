package history

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/discoverd/discoverd/api"
)

// Config tunes Check.
type Config struct {
	// TTL is the servers' --instance-ttl: an instance whose recorded
	// heartbeats left a gap this long may have been expired by the server.
	TTL time.Duration
	// Slack shortens the gap that allows an expiry, for the time a heartbeat
	// takes to reach the leader's table (default 250ms).
	Slack time.Duration
	// Unwatched reports instances whose heartbeats are not all recorded
	// (heartbeats over NATS): the server may expire them at any time, and
	// an unrecorded heartbeat may register them again (with a new index).
	Unwatched func(service, id string) bool
	// Discount reports acknowledged heartbeats that do not keep an instance
	// alive, e.g. those answered by a node cut off from the majority.
	Discount func(op *Op) bool
	// Timeout bounds porcupine on one partition (default 60s).
	Timeout time.Duration
	// VisualizeDir, when set, receives porcupine's HTML visualization of
	// every partition that is not linearizable.
	VisualizeDir string
	// Settled, when set, is a time by which every operation invoked before
	// it had taken effect or never would: the cluster had healed and every
	// node had applied the same log, and no fault came after. An operation
	// of unknown outcome is then taken to have returned by Settled or
	// MaxApply after its call, whichever is later, rather than never.
	Settled time.Time
	// MaxApply bounds how long a healthy server works on a request (its
	// apply and forwarding timeouts; default 12s).
	MaxApply time.Duration
}

func (c *Config) slack() time.Duration {
	if c.Slack > 0 {
		return c.Slack
	}
	return 250 * time.Millisecond
}

// Report is the outcome of Check.
type Report struct {
	Ops        int
	Partitions int
	// Problems is empty when the history is correct.
	Problems []string
	// Inconclusive lists the partitions porcupine could not decide within
	// Config.Timeout (refuting a history with many writes of unknown outcome
	// may take exponential time).
	Inconclusive []string
	Elapsed      time.Duration
}

// Check checks a history: each instance and each service's meta must be
// linearizable against the registry model (porcupine, one partition per
// instance and one per service meta), acknowledged writes that made Raft
// entries must have distinct indexes, and meta writes acknowledged one after
// the other must have increasing indexes.
//
// A lost acknowledged write shows as a later read (or write) that cannot be
// linearized after it; so the history should end with consistent reads of
// every service's instances and meta, taken while the heartbeats still run.
func Check(ops []Op, cfg Config) Report {
	start := time.Now()
	rep := Report{Ops: len(ops)}
	if cfg.TTL <= 0 {
		rep.Problems = append(rep.Problems, "history.Check: Config.TTL is not set")
		return rep
	}
	rep.Problems = append(rep.Problems, checkIndexes(ops)...)
	parts := partition(ops)
	rep.Partitions = len(parts)
	keys := make([]string, 0, len(parts))
	for k := range parts {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, key := range keys {
		p := parts[key]
		// A quick necessary condition first: it explains the common
		// violations plainly, and porcupine may take exponential time to
		// refute a history with many writes of unknown outcome.
		if msg := monotonic(p); msg != "" {
			rep.Problems = append(rep.Problems, fmt.Sprintf("%s: not linearizable: %s", key, msg))
			continue
		}
		var model porcupine.Model
		var hist []porcupine.Operation
		if p.meta {
			model, hist = metaModel(), metaHistory(p.ops, &cfg)
		} else {
			model, hist = instanceModel(), instanceHistory(p, ops, &cfg)
		}
		timeout := cfg.Timeout
		if timeout <= 0 {
			timeout = time.Minute
		}
		res, info := porcupine.CheckOperationsVerbose(model, hist, timeout)
		switch res {
		case porcupine.Ok:
			continue
		case porcupine.Unknown:
			rep.Inconclusive = append(rep.Inconclusive, fmt.Sprintf("%s: porcupine could not decide within %v (%d operations)", key, timeout, len(hist)))
			continue
		}
		msg := fmt.Sprintf("%s: not linearizable (%d operations):\n%s", key, len(hist), describe(p.ops, info))
		if cfg.VisualizeDir != "" {
			name := filepath.Join(cfg.VisualizeDir, strings.NewReplacer("/", "_", ":", "_").Replace(key)+".html")
			if err := os.MkdirAll(cfg.VisualizeDir, 0o755); err == nil {
				if err := porcupine.VisualizePath(model, info, name); err == nil {
					msg += "\n  visualization: " + name
				}
			}
		}
		rep.Problems = append(rep.Problems, msg)
	}
	rep.Elapsed = time.Since(start)
	return rep
}

// describe lists the operations of a partition that is not linearizable,
// marking the longest prefix porcupine could linearize.
func describe(ops []*Op, info porcupine.LinearizationInfo) string {
	var b strings.Builder
	lin := map[int]bool{}
	for _, part := range info.PartialLinearizations() {
		best := []int{}
		for _, l := range part {
			if len(l) > len(best) {
				best = l
			}
		}
		for _, i := range best {
			lin[i] = true
		}
	}
	for i, op := range ops {
		mark := " "
		if !lin[i] {
			mark = "!"
		}
		fmt.Fprintf(&b, "  %s %s\n", mark, op)
	}
	b.WriteString("  (! = outside the longest linearizable prefix porcupine found)")
	return b.String()
}

// monotonic checks, in real time, what any linearization must respect: an
// instance's index (the Raft index of its registration) and a service's
// meta index only grow, and an instance seen at index i and then seen gone
// never comes back at index i (a new registration gets a new index). It
// returns "" or the operations that break it.
func monotonic(p *part) string {
	type obs struct {
		op      *Op
		present bool
		index   uint64
	}
	var all []obs
	for _, op := range p.ops {
		if op.Outcome != OK {
			continue
		}
		switch op.Kind {
		case Register:
			all = append(all, obs{op, true, op.Index})
		case Deregister:
			all = append(all, obs{op, false, 0})
		case ReadInstances:
			o := obs{op: op}
			for _, in := range op.Instances {
				if in.ID == p.id {
					o.present, o.index = true, in.Index
				}
			}
			all = append(all, o)
		case SetMeta, GetMeta:
			all = append(all, obs{op, true, op.Index})
		}
	}
	before := func(a, b obs) bool { return a.op.Return.Before(b.op.Call) }
	for _, a := range all {
		for _, b := range all {
			if a.present && b.present && before(a, b) && b.index < a.index {
				return fmt.Sprintf("the index went back from %d to %d:\n  %s\n  %s", a.index, b.index, a.op, b.op)
			}
		}
	}
	if p.meta {
		return ""
	}
	for _, gone := range all {
		if gone.present {
			continue
		}
		for _, e := range all {
			if !e.present || !before(e, gone) {
				continue
			}
			for _, b := range all {
				if b.present && b.index == e.index && before(gone, b) {
					return fmt.Sprintf("index %d came back after the instance was gone:\n  %s\n  %s\n  %s", e.index, e.op, gone.op, b.op)
				}
			}
		}
	}
	return ""
}

// part is the operations of one instance or of one service's meta.
type part struct {
	meta    bool
	service string
	id      string
	// ops are the operations touching it (a ReadInstances appears in every
	// instance partition of its service).
	ops []*Op
}

func partition(ops []Op) map[string]*part {
	parts := map[string]*part{}
	get := func(service, id string, meta bool) *part {
		key := service + "/meta"
		if !meta {
			key = service + "/instances/" + id
		}
		p := parts[key]
		if p == nil {
			p = &part{meta: meta, service: service, id: id}
			parts[key] = p
		}
		return p
	}
	// Instances are those some recorded write names; an instance only ever
	// seen in reads was registered by someone not recorded, and is not judged.
	for i := range ops {
		op := &ops[i]
		if op.Kind == Register || op.Kind == Deregister {
			get(op.Service, op.Instance, false)
		}
	}
	for i := range ops {
		op := &ops[i]
		switch op.Kind {
		case Register, Deregister:
			p := get(op.Service, op.Instance, false)
			p.ops = append(p.ops, op)
		case ReadInstances:
			for _, p := range parts {
				if !p.meta && p.service == op.Service {
					p.ops = append(p.ops, op)
				}
			}
		case SetMeta, GetMeta:
			p := get(op.Service, "", true)
			p.ops = append(p.ops, op)
		}
	}
	return parts
}

// never is the return time of operations whose outcome is unknown: they may
// take effect at any time after their call.
const never = math.MaxInt64

func ret(op *Op, cfg *Config) int64 {
	if op.Outcome != Unknown {
		return op.Return.UnixNano()
	}
	if cfg.Settled.IsZero() {
		return never
	}
	maxApply := cfg.MaxApply
	if maxApply <= 0 {
		maxApply = 12 * time.Second
	}
	return max(cfg.Settled.UnixNano(), op.Call.Add(maxApply).UnixNano(), op.Return.UnixNano())
}

// --- instances ---

// instState is one instance in the model. The zero value is "never
// registered".
type instState struct {
	Present bool
	// Index is the instance's index; 0 while present but not yet known (an
	// unacknowledged registration that may have taken effect).
	Index uint64
	// Reg is the registration; "" when unknown.
	Reg string
	// Floor is the highest index the instance ever had: a new registration
	// gets a higher one.
	Floor uint64
}

type instInput struct {
	kind Kind
	reg  string
	// expiryOK: the server may have expired the instance before this
	// operation took effect (its heartbeats left a gap of a TTL by then).
	expiryOK bool
	// unrecorded: heartbeats that are not in the history may have
	// registered the instance again before this operation took effect.
	unrecorded bool
}

type instOutput struct {
	outcome Outcome
	code    api.ErrorCode
	present bool
	index   uint64
	reg     string
}

func (s instState) gone() instState {
	return instState{Floor: max(s.Floor, s.Index)}
}

func instanceModel() porcupine.Model {
	nm := porcupine.NondeterministicModel{
		Init: func() []interface{} { return []interface{}{instState{}} },
		Step: func(st, in, out interface{}) []interface{} {
			s, i, o := st.(instState), in.(instInput), out.(instOutput)
			starts := []instState{s}
			if i.expiryOK && s.Present {
				starts = append(starts, s.gone())
			}
			if i.unrecorded {
				for _, c := range starts {
					if !c.Present {
						// Registered again, index and registration unknown.
						starts = append(starts, instState{Present: true, Floor: c.Floor})
						break
					}
				}
			}
			var next []interface{}
			for _, c := range starts {
				for _, n := range instStep(c, i, o) {
					next = append(next, n)
				}
			}
			return next
		},
		DescribeOperation: func(in, out interface{}) string {
			i, o := in.(instInput), out.(instOutput)
			s := i.kind.String()
			if i.kind == Register {
				s += " [" + i.reg + "]"
			}
			if i.expiryOK {
				s += " (may have expired)"
			}
			switch {
			case o.outcome != OK:
				return s + " -> " + o.outcome.String() + " " + string(o.code)
			case i.kind == ReadInstances && !o.present:
				return s + " -> absent"
			case i.kind == Deregister:
				return s + " -> ok"
			}
			return fmt.Sprintf("%s -> index %d [%s]", s, o.index, o.reg)
		},
		DescribeState: func(st interface{}) string {
			s := st.(instState)
			if !s.Present {
				return fmt.Sprintf("absent (floor %d)", s.Floor)
			}
			return fmt.Sprintf("present index %d [%s]", s.Index, s.Reg)
		},
	}
	return nm.ToModel()
}

// matches reports whether a present instance in state c may be the one
// observed (index, reg), and returns the state with the unknowns resolved.
func (c instState) matches(index uint64, reg string) (instState, bool) {
	if !c.Present {
		return c, false
	}
	if c.Index != 0 && c.Index != index {
		return c, false
	}
	if c.Index == 0 && index <= c.Floor {
		return c, false
	}
	if c.Reg != "" && c.Reg != reg {
		return c, false
	}
	c.Index, c.Reg = index, reg
	return c, true
}

func instStep(c instState, i instInput, o instOutput) []instState {
	switch i.kind {
	case Register:
		applied := c
		if c.Present {
			applied.Reg = i.reg // an update keeps the index
		} else {
			applied = instState{Present: true, Reg: i.reg, Floor: c.Floor}
		}
		switch o.outcome {
		case OK:
			// The answer is the stored instance: the registration sent.
			if o.reg != i.reg {
				return nil
			}
			if !c.Present {
				if o.index <= c.Floor {
					return nil
				}
				return []instState{{Present: true, Index: o.index, Reg: i.reg, Floor: c.Floor}}
			}
			if c.Index != 0 && c.Index != o.index {
				return nil
			}
			if c.Index == 0 && o.index <= c.Floor {
				return nil
			}
			return []instState{{Present: true, Index: o.index, Reg: i.reg, Floor: c.Floor}}
		case Failed:
			return []instState{c}
		default:
			return []instState{c, applied}
		}
	case Deregister:
		switch o.outcome {
		case OK:
			if !c.Present {
				return nil
			}
			return []instState{c.gone()}
		case Failed:
			if o.code == api.CodeNotFound && c.Present {
				return nil
			}
			return []instState{c}
		default:
			if c.Present {
				return []instState{c, c.gone()}
			}
			return []instState{c}
		}
	case ReadInstances:
		if o.outcome != OK {
			return []instState{c} // a read without an answer tells nothing
		}
		if !o.present {
			if c.Present {
				return nil
			}
			return []instState{c}
		}
		if n, ok := c.matches(o.index, o.reg); ok {
			return []instState{n}
		}
		return nil
	}
	return nil
}

// expiryWindows computes, for one instance, from when on the server may
// have expired it: the starts of the gaps in its acknowledged heartbeats
// (those Discount leaves) that reach TTL - Slack.
func expiryFrom(p *part, cfg *Config) int64 {
	if cfg.Unwatched != nil && cfg.Unwatched(p.service, p.id) {
		return math.MinInt64
	}
	limit := cfg.TTL - cfg.slack()
	var first *Op
	var oks []*Op
	for _, op := range p.ops {
		if op.Kind != Register {
			continue
		}
		if first == nil || op.Call.Before(first.Call) {
			first = op
		}
		if op.Outcome == OK && (cfg.Discount == nil || !cfg.Discount(op)) {
			oks = append(oks, op)
		}
	}
	if first == nil {
		return math.MinInt64 // never registered by a recorded client
	}
	slices.SortFunc(oks, func(a, b *Op) int { return a.Call.Compare(b.Call) })
	// Gaps: from the first attempt to the first success, between two
	// successes (the server heard the earlier no sooner than its call and
	// the later no later than its return), and after the last success.
	from := first.Call
	for _, s := range oks {
		if s.Return.Sub(from) >= limit {
			return from.Add(limit).UnixNano()
		}
		if s.Call.After(from) {
			from = s.Call
		}
	}
	return from.Add(limit).UnixNano()
}

// ExpiryFrom returns when the server may first have expired instance id of
// service, by the gaps in its recorded heartbeats (see Check): an instance
// that kept heartbeating until end must not have been expired if the time
// returned is after end.
func ExpiryFrom(ops []Op, service, id string, cfg Config) time.Time {
	p := &part{service: service, id: id}
	for i := range ops {
		if op := ops[i]; op.Service == service && op.Instance == id {
			p.ops = append(p.ops, &op)
		}
	}
	t := expiryFrom(p, &cfg)
	if t == math.MinInt64 {
		return time.Time{}
	}
	return time.Unix(0, t)
}

func instanceHistory(p *part, all []Op, cfg *Config) []porcupine.Operation {
	expiry := expiryFrom(p, cfg)
	unrecorded := cfg.Unwatched != nil && cfg.Unwatched(p.service, p.id)
	var out []porcupine.Operation
	for _, op := range p.ops {
		in := instInput{kind: op.Kind, reg: op.Reg, expiryOK: ret(op, cfg) >= expiry, unrecorded: unrecorded}
		o := instOutput{outcome: op.Outcome, code: op.Code}
		switch op.Kind {
		case Register:
			if op.Outcome == OK && len(op.Instances) == 1 {
				o.present, o.index, o.reg = true, op.Instances[0].Index, op.Instances[0].Reg
			}
		case ReadInstances:
			for _, got := range op.Instances {
				if got.ID == p.id {
					o.present, o.index, o.reg = true, got.Index, got.Reg
				}
			}
		}
		out = append(out, porcupine.Operation{ClientId: op.Client, Input: in, Output: o, Call: op.Call.UnixNano(), Return: ret(op, cfg)})
	}
	return out
}

// --- service meta ---

type metaState struct {
	Exists bool
	Data   string
	// Index is 0 while the meta exists but its index is not known (an
	// unacknowledged write that may have taken effect).
	Index uint64
	// Floor is the highest meta index seen: a write gets a higher one.
	Floor uint64
}

type metaInput struct {
	kind   Kind
	expect uint64
	data   string
}

type metaOutput struct {
	outcome Outcome
	code    api.ErrorCode
	index   uint64
	data    string
}

// casOK reports whether a write expecting index e succeeds on state c
// (unknown: the index is not known, so it may).
func (c metaState) casOK(e uint64) (ok, unknown bool) {
	switch {
	case !c.Exists:
		return e == 0, false
	case e == 0:
		return false, false
	case c.Index == 0:
		return e > c.Floor, true
	}
	return c.Index == e, false
}

func metaModel() porcupine.Model {
	nm := porcupine.NondeterministicModel{
		Init: func() []interface{} { return []interface{}{metaState{}} },
		Step: func(st, in, out interface{}) []interface{} {
			var next []interface{}
			for _, n := range metaStep(st.(metaState), in.(metaInput), out.(metaOutput)) {
				next = append(next, n)
			}
			return next
		},
		DescribeOperation: func(in, out interface{}) string {
			i, o := in.(metaInput), out.(metaOutput)
			var s string
			if i.kind == SetMeta {
				s = fmt.Sprintf("set %s if %d", i.data, i.expect)
			} else {
				s = "get"
			}
			if o.outcome != OK {
				return s + " -> " + o.outcome.String() + " " + string(o.code)
			}
			if i.kind == SetMeta {
				return fmt.Sprintf("%s -> %d", s, o.index)
			}
			return fmt.Sprintf("%s -> %s@%d", s, o.data, o.index)
		},
		DescribeState: func(st interface{}) string {
			s := st.(metaState)
			if !s.Exists {
				return "no meta"
			}
			return fmt.Sprintf("%s@%d", s.Data, s.Index)
		},
	}
	return nm.ToModel()
}

func metaStep(c metaState, i metaInput, o metaOutput) []metaState {
	floor := max(c.Floor, c.Index)
	switch i.kind {
	case SetMeta:
		ok, unknown := c.casOK(i.expect)
		switch o.outcome {
		case OK:
			if !ok || o.index <= floor {
				return nil
			}
			return []metaState{{Exists: true, Data: i.data, Index: o.index, Floor: o.index}}
		case Failed:
			switch o.code {
			case api.CodeExists:
				if c.Exists && i.expect == 0 {
					return []metaState{c}
				}
				return nil
			case api.CodePreconditionFailed:
				if ok && !unknown {
					return nil
				}
				return []metaState{c}
			}
			return []metaState{c}
		default:
			if !ok {
				return []metaState{c}
			}
			return []metaState{c, {Exists: true, Data: i.data, Floor: floor}}
		}
	case GetMeta:
		switch {
		case o.outcome == Unknown:
			return []metaState{c} // a read without an answer tells nothing
		case o.outcome == Failed && o.code == api.CodeNotFound:
			if c.Exists {
				return nil
			}
			return []metaState{c}
		case o.outcome == Failed:
			return []metaState{c}
		}
		if !c.Exists || c.Data != o.data {
			return nil
		}
		if c.Index != 0 && c.Index != o.index {
			return nil
		}
		if c.Index == 0 && o.index <= c.Floor {
			return nil
		}
		c.Index, c.Floor = o.index, max(c.Floor, o.index)
		return []metaState{c}
	}
	return nil
}

func metaHistory(ops []*Op, cfg *Config) []porcupine.Operation {
	var out []porcupine.Operation
	for _, op := range ops {
		in := metaInput{kind: op.Kind, expect: op.MetaExpect, data: op.MetaData}
		o := metaOutput{outcome: op.Outcome, code: op.Code, index: op.Index}
		if op.Kind == GetMeta {
			o.data = op.MetaData
		}
		out = append(out, porcupine.Operation{ClientId: op.Client, Input: in, Output: o, Call: op.Call.UnixNano(), Return: ret(op, cfg)})
	}
	return out
}

// --- indexes ---

// checkIndexes: every acknowledged write that made a Raft entry has its own
// index, and meta writes acknowledged one after the other have increasing
// indexes (Raft indexes follow real time).
func checkIndexes(ops []Op) []string {
	var problems []string
	owner := map[uint64]string{}
	claim := func(index uint64, what string, op *Op) {
		if prev, ok := owner[index]; ok && prev != what {
			problems = append(problems, fmt.Sprintf("index %d acknowledged for both %s and %s (%s)", index, prev, what, op))
			return
		}
		owner[index] = what
	}
	var metas []*Op
	for i := range ops {
		op := &ops[i]
		if op.Outcome != OK {
			continue
		}
		switch op.Kind {
		case Register:
			claim(op.Index, "instance "+op.Service+"/"+op.Instance, op)
		case SetMeta:
			claim(op.Index, fmt.Sprintf("meta %s of %s", op.MetaData, op.Service), op)
			metas = append(metas, op)
		}
	}
	// Meta writes: an earlier acknowledged one has a lower index.
	slices.SortFunc(metas, func(a, b *Op) int { return a.Return.Compare(b.Return) })
	for i, b := range metas {
		for _, a := range metas[:i] {
			if a.Return.Before(b.Call) && a.Index >= b.Index {
				problems = append(problems, fmt.Sprintf("meta write %s was acknowledged before %s began, but its index is not lower", a, b))
			}
		}
	}
	return problems
}
