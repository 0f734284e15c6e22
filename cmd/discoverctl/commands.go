package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/discoverd/discoverd/api"
	"github.com/discoverd/discoverd/client"
	"github.com/discoverd/discoverd/internal/version"
)

var commands = map[string]*command{
	"services":         {nargs: 0, setup: noFlags(cmdServices)},
	"add-service":      {args: "SVC", nargs: 1, setup: addService},
	"remove-service":   {args: "SVC", nargs: 1, setup: noFlags(cmdRemoveService)},
	"instances":        {args: "SVC", nargs: 1, setup: noFlags(cmdInstances)},
	"leader":           {args: "SVC", nargs: 1, setup: noFlags(cmdLeader)},
	"register":         {args: "SVC ADDR", nargs: 2, setup: register, long: true},
	"watch":            {args: "SVC", nargs: 1, setup: noFlags(cmdWatch), long: true},
	"meta get":         {args: "SVC", nargs: 1, setup: noFlags(cmdMetaGet)},
	"meta set":         {args: "SVC JSON", nargs: 2, setup: metaSet},
	"peers":            {nargs: 0, setup: noFlags(cmdPeers)},
	"status":           {nargs: 0, setup: noFlags(cmdStatus)},
	"version":          {nargs: 0, setup: noFlags(cmdVersion)},
	"snapshot save":    {args: "FILE", nargs: 1, setup: noFlags(cmdSnapshotSave)},
	"snapshot restore": {args: "FILE", nargs: 1, setup: noFlags(cmdSnapshotRestore)},
	"snapshot inspect": {args: "FILE", nargs: 1, setup: noFlags(cmdSnapshotInspect)},
}

// subcommands are the commands named by two words, with the second words
// they take.
var subcommands = map[string]string{
	"meta":     "get or set",
	"snapshot": "save, restore or inspect",
}

type runFunc = func(e *env, args []string) error

func noFlags(fn runFunc) func(*flag.FlagSet) runFunc {
	return func(*flag.FlagSet) runFunc { return fn }
}

// printJSON writes v as indented JSON.
func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// table writes rows aligned in columns.
func table(w io.Writer, header []string, rows [][]string) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	for _, r := range rows {
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	return tw.Flush()
}

// metaString formats instance meta as k=v,k=v in key order.
func metaString(m map[string]string) string {
	if len(m) == 0 {
		return "-"
	}
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, k+"="+m[k])
	}
	return strings.Join(parts, ",")
}

func instanceRow(inst *api.Instance) []string {
	return []string{inst.ID, inst.Addr, inst.Proto, strconv.FormatUint(inst.Index, 10), metaString(inst.Meta)}
}

var instanceHeader = []string{"ID", "ADDR", "PROTO", "INDEX", "META"}

func cmdServices(e *env, _ []string) error {
	names, err := e.c.Services(e.ctx)
	if err != nil {
		return err
	}
	if e.json {
		return printJSON(e.stdout, names)
	}
	rows := make([][]string, len(names))
	for i, n := range names {
		rows[i] = []string{n}
	}
	return table(e.stdout, []string{"SERVICE"}, rows)
}

func addService(fs *flag.FlagSet) runFunc {
	leaderType := fs.String("leader-type", string(api.LeaderTypeOldest), "oldest or manual")
	return func(e *env, args []string) error { return cmdAddService(e, args, *leaderType) }
}

func cmdAddService(e *env, args []string, leaderType string) error {
	if err := e.c.AddService(e.ctx, args[0], &api.ServiceConfig{LeaderType: api.LeaderType(leaderType)}); err != nil {
		return err
	}
	if e.json {
		return printJSON(e.stdout, api.ServiceConfig{LeaderType: api.LeaderType(leaderType)})
	}
	fmt.Fprintf(e.stdout, "created service %s (leader type %s)\n", args[0], leaderType)
	return nil
}

func cmdRemoveService(e *env, args []string) error {
	if err := e.c.RemoveService(e.ctx, args[0]); err != nil {
		return err
	}
	if e.json {
		return printJSON(e.stdout, map[string]string{"removed": args[0]})
	}
	fmt.Fprintf(e.stdout, "removed service %s\n", args[0])
	return nil
}

func cmdInstances(e *env, args []string) error {
	insts, err := e.c.Instances(e.ctx, args[0])
	if err != nil {
		return err
	}
	if e.json {
		return printJSON(e.stdout, insts)
	}
	leader, _ := e.c.Leader(e.ctx, args[0])
	rows := make([][]string, len(insts))
	for i, inst := range insts {
		mark := ""
		if leader != nil && leader.ID == inst.ID && leader.Index == inst.Index {
			mark = "*"
		}
		rows[i] = append(instanceRow(inst), mark)
	}
	return table(e.stdout, append(slices.Clone(instanceHeader), "LEADER"), rows)
}

func cmdLeader(e *env, args []string) error {
	leader, err := e.c.Leader(e.ctx, args[0])
	if err != nil {
		return err
	}
	if e.json {
		return printJSON(e.stdout, leader)
	}
	if leader == nil {
		return nothingThere(e, "service %s has no leader", args[0])
	}
	return table(e.stdout, instanceHeader, [][]string{instanceRow(leader)})
}

// metaFlag collects repeated --meta k=v.
type metaFlag map[string]string

func (m metaFlag) String() string { return metaString(m) }

func (m metaFlag) Set(s string) error {
	k, v, ok := strings.Cut(s, "=")
	if !ok || k == "" {
		return fmt.Errorf("--meta %q is not key=value", s)
	}
	m[k] = v
	return nil
}

type registerOpts struct {
	meta   metaFlag
	id     string
	proto  string
	create bool
	check  checkFlags
}

func register(fs *flag.FlagSet) runFunc {
	o := &registerOpts{meta: metaFlag{}}
	fs.Var(o.meta, "meta", "instance meta key=value (repeatable)")
	fs.StringVar(&o.id, "id", "", "instance id (default: derived from proto and addr)")
	fs.StringVar(&o.proto, "proto", client.DefaultProto, "instance proto")
	fs.BoolVar(&o.create, "create", false, "create the service if it does not exist")
	o.check.register(fs)
	return func(e *env, args []string) error { return cmdRegister(e, args, o) }
}

// cmdRegister registers and heartbeats until e.ctx ends (a signal), then
// deregisters.
func cmdRegister(e *env, args []string, regOpts *registerOpts) error {
	service, addr := args[0], args[1]
	opts := []client.RegisterOption{
		client.Proto(regOpts.proto),
		client.InstanceID(regOpts.id),
		client.OnError(func(err error) {
			fmt.Fprintf(e.stderr, "discoverctl: warning: %s\n", oneLine(errMessage(err)))
		}),
	}
	check, err := regOpts.check.option()
	if err != nil {
		return err
	}
	if check != nil {
		opts = append(opts, check)
	}
	var meta map[string]string
	if len(regOpts.meta) > 0 {
		meta = regOpts.meta
	}
	ctx, cancel := context.WithTimeout(e.ctx, e.timeout)
	defer cancel()
	register := e.c.Register
	if regOpts.create {
		register = e.c.AddServiceAndRegister
	}
	h, err := register(ctx, service, addr, meta, opts...)
	if err != nil {
		return err
	}
	if check != nil {
		return followCheck(e, h, &regOpts.check)
	}
	inst := h.Instance()
	if e.json {
		if err := printJSON(e.stdout, inst); err != nil {
			h.Close()
			return err
		}
	} else {
		fmt.Fprintf(e.stdout, "registered %s in service %s at %s (index %d); heartbeating until interrupted\n",
			inst.ID, service, inst.Addr, inst.Index)
	}
	<-e.ctx.Done()
	if err := h.Close(); err != nil {
		return fmt.Errorf("deregistering %s: %w", inst.ID, err)
	}
	if !e.json {
		fmt.Fprintf(e.stdout, "deregistered %s\n", inst.ID)
	}
	return nil
}

// cmdWatch prints events until e.ctx ends (a signal).
func cmdWatch(e *env, args []string) error {
	// The client's retry timeout bounds the connection; e.ctx the watch.
	w, err := e.c.Watch(e.ctx, args[0])
	if err != nil {
		return err
	}
	defer w.Close()
	enc := json.NewEncoder(e.stdout)
	for ev := range w.Events() {
		if e.json {
			if err := enc.Encode(ev); err != nil {
				return err
			}
			continue
		}
		if _, err := fmt.Fprintln(e.stdout, eventLine(ev)); err != nil {
			return err
		}
	}
	return nil
}

// eventLine formats an event for people: kind, index, then what it is about.
func eventLine(ev api.Event) string {
	var what string
	switch ev.Kind {
	case api.EventUp, api.EventUpdate, api.EventDown, api.EventLeader:
		if ev.Instance == nil {
			what = "(none)"
		} else {
			i := ev.Instance
			what = fmt.Sprintf("%s %s %s index=%d meta=%s", i.ID, i.Addr, i.Proto, i.Index, metaString(i.Meta))
		}
	case api.EventServiceMeta:
		if ev.ServiceMeta != nil {
			what = fmt.Sprintf("index=%d data=%s", ev.ServiceMeta.Index, ev.ServiceMeta.Data)
		}
	}
	return strings.TrimSpace(fmt.Sprintf("%-12s %-8d %s", ev.Kind, ev.Index, what))
}

// nothingThere answers a read of something a service that exists does not
// have (a leader, meta): it is an answer, not a failure, so the exit code is
// 0, with null for --json and a sentence for people. A service that does
// not exist is an error (exit 1).
func nothingThere(e *env, format string, args ...any) error {
	if e.json {
		_, err := fmt.Fprintln(e.stdout, "null")
		return err
	}
	_, err := fmt.Fprintf(e.stdout, format+"\n", args...)
	return err
}

func printMeta(e *env, m *api.ServiceMeta) error {
	if e.json {
		return printJSON(e.stdout, m)
	}
	return table(e.stdout, []string{"INDEX", "DATA"}, [][]string{{strconv.FormatUint(m.Index, 10), string(m.Data)}})
}

func cmdMetaGet(e *env, args []string) error {
	m, err := e.c.GetMeta(e.ctx, args[0])
	if client.IsNotFound(err) {
		// No meta, or no service: the server answers 404 for both, and
		// only a missing service is an error (see nothingThere).
		if _, serr := e.c.Instances(e.ctx, args[0]); serr != nil {
			return serr
		}
		return nothingThere(e, "service %s has no meta", args[0])
	}
	if err != nil {
		return err
	}
	return printMeta(e, m)
}

func metaSet(fs *flag.FlagSet) runFunc {
	index := fs.Int64("index", -1, "compare-and-set: write only if the meta's index is this (0: only if there is none)")
	return func(e *env, args []string) error { return cmdMetaSet(e, args, *index) }
}

func cmdMetaSet(e *env, args []string, metaIndex int64) error {
	service, data := args[0], json.RawMessage(args[1])
	if !json.Valid(data) {
		return usagef("meta data %q is not valid JSON", args[1])
	}
	if metaIndex >= 0 {
		m, err := e.c.SetMeta(e.ctx, service, &api.ServiceMeta{Data: data, Index: uint64(metaIndex)})
		if err != nil {
			return err
		}
		return printMeta(e, m)
	}
	// Without --index: over whatever is there (retrying a lost race).
	for attempt := 0; ; attempt++ {
		var index uint64
		cur, err := e.c.GetMeta(e.ctx, service)
		switch {
		case err == nil:
			index = cur.Index
		case client.IsNotFound(err):
			// No meta yet (or no service: the write says which).
		default:
			return err
		}
		m, err := e.c.SetMeta(e.ctx, service, &api.ServiceMeta{Data: data, Index: index})
		if err == nil {
			return printMeta(e, m)
		}
		if attempt < 3 && (client.IsPreconditionFailed(err) || client.IsExists(err)) {
			continue
		}
		return err
	}
}

func cmdPeers(e *env, _ []string) error {
	peers, err := e.c.Peers(e.ctx)
	if err != nil {
		if client.IsNotFound(err) {
			return fmt.Errorf("the server does not serve the cluster routes (GET /raft/peers: %s)", errMessage(err))
		}
		return err
	}
	if e.json {
		return printJSON(e.stdout, peers)
	}
	rows := make([][]string, len(peers))
	for i, p := range peers {
		mark := ""
		if p.Leader {
			mark = "*"
		}
		rows[i] = []string{p.Addr, mark}
	}
	return table(e.stdout, []string{"ADDR", "LEADER"}, rows)
}

func cmdStatus(e *env, _ []string) error {
	st, err := e.c.Status(e.ctx)
	if err != nil {
		return err
	}
	if e.json {
		return printJSON(e.stdout, st)
	}
	leader := st.Leader
	if leader == "" {
		leader = "(none)"
	}
	return table(e.stdout, []string{"FIELD", "VALUE"}, [][]string{
		{"role", st.Role},
		{"addr", st.Addr},
		{"leader", leader},
		{"applied_index", strconv.FormatUint(st.AppliedIndex, 10)},
		{"healthy", strconv.FormatBool(st.Healthy)},
	})
}

// nodeVersion is one row of `discoverctl version`.
type nodeVersion struct {
	Addr    string `json:"addr"`
	Role    string `json:"role"`
	Version string `json:"version"`
	// Error says why the node did not answer.
	Error string `json:"error,omitempty"`
}

type versions struct {
	Client string        `json:"client"`
	Nodes  []nodeVersion `json:"nodes"`
}

// cmdVersion lists the client's version and every node's: the voters, and
// any server given that is a proxy. A node that does not answer is listed
// with the reason rather than failing the command.
func cmdVersion(e *env, _ []string) error {
	out := versions{Client: version.Get(), Nodes: []nodeVersion{}}
	var addrs []string
	if peers, err := e.c.Peers(e.ctx); err == nil {
		for _, p := range peers {
			addrs = append(addrs, p.Addr)
		}
	} else if !client.IsNotFound(err) {
		return err
	}
	for _, s := range e.c.Servers() {
		s = strings.TrimPrefix(strings.TrimPrefix(strings.TrimSpace(s), "http://"), "https://")
		if s != "" && !slices.Contains(addrs, s) {
			addrs = append(addrs, s)
		}
	}
	for _, addr := range addrs {
		nv := nodeVersion{Addr: addr}
		// A node that is down is reported, not waited for.
		c := client.NewWithOptions([]string{addr}, client.WithRetryTimeout(time.Second))
		st, err := c.Status(e.ctx)
		c.Close()
		if err != nil {
			nv.Role, nv.Version, nv.Error = "-", "-", errMessage(err)
		} else {
			if st.Addr != addr && slices.ContainsFunc(out.Nodes, func(n nodeVersion) bool { return n.Addr == st.Addr }) {
				continue // the same node under another address
			}
			nv.Role, nv.Version = st.Role, st.Version
			if nv.Version == "" {
				nv.Version = "(not reported)"
			}
		}
		out.Nodes = append(out.Nodes, nv)
	}
	if e.json {
		return printJSON(e.stdout, out)
	}
	rows := [][]string{{"(this client)", "discoverctl", out.Client}}
	for _, n := range out.Nodes {
		v := n.Version
		if n.Error != "" {
			v = "unreachable: " + n.Error
		}
		rows = append(rows, []string{n.Addr, n.Role, v})
	}
	return table(e.stdout, []string{"ADDR", "ROLE", "VERSION"}, rows)
}
