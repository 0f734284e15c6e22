package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/discoverd/discoverd/api"
	"github.com/discoverd/discoverd/client"
	"github.com/discoverd/discoverd/internal/version"
)

const usageText = `usage: discoverctl [flags] COMMAND [ARGS]

Commands:
  services                  list the services
  add-service SVC           create a service (--leader-type oldest|manual)
  remove-service SVC        remove a service with its instances and meta
  instances SVC             list a service's instances, oldest first
  leader SVC                show a service's leader
  register SVC ADDR         register an instance at ADDR (host:port) and keep it
                            alive until interrupted, then deregister it
                            (--meta k=v ..., --id ID, --proto P, --create);
                            with --check-http URL or --check-tcp ADDR, only
                            while that check passes (--check-interval D,
                            --check-timeout D, --check-passes N,
                            --check-failures N), printing each change
  watch SVC                 stream a service's events until interrupted
  meta get SVC              show a service's meta
  meta set SVC JSON         write a service's meta: with --index N, only if
                            its index is N (0: only if it has none); without,
                            over whatever is there
  peers                     list the Raft voters
  status                    show the server's status
  version                   show the version of discoverctl and of every node
  snapshot save FILE        write a backup of the registry to FILE
  snapshot restore FILE     replace the cluster's registry with a backup
  snapshot inspect FILE     check a backup and describe it (no server needed)

Flags (anywhere on the line; -- ends them):
  --server ADDR[,ADDR...]   discoverd server(s) (default: $DISCOVERD, else 127.0.0.1:1111)
  --json                    print JSON instead of tables
  --timeout D               how long a command may take (default 5s; not the
                            lifetime of register and watch)
  --version                 print discoverctl's version and exit

Exit codes: 0 on success, including an answer that there is nothing there
(no leader, no meta: null with --json); 1 on a failure, such as a service
that does not exist; 2 for a usage error.
`

// exitUsage is the exit code of a usage error.
const exitUsage = 2

// usageError is a command line the tool does not understand.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return &usageError{fmt.Sprintf(format, args...)}
}

// globals are the flags every command takes.
type globals struct {
	server  string
	json    bool
	timeout time.Duration
}

func (g *globals) register(fs *flag.FlagSet) {
	fs.StringVar(&g.server, "server", g.server, "discoverd server(s), comma-separated")
	fs.BoolVar(&g.json, "json", g.json, "print JSON")
	fs.DurationVar(&g.timeout, "timeout", g.timeout, "how long a command may take")
}

// env is one invocation: its flags, output and client.
type env struct {
	globals
	ctx    context.Context
	stdout io.Writer
	stderr io.Writer
	c      *client.Client
}

// command is one subcommand: its own flags and its function, given the
// positional arguments.
type command struct {
	args  string // usage of the positional arguments
	nargs int
	// setup registers the command's own flags and returns its function.
	setup func(fs *flag.FlagSet) func(e *env, args []string) error
	// long commands run until interrupted: the timeout bounds only their
	// start.
	long bool
}

// run runs discoverctl with args and returns the exit code; SIGINT and
// SIGTERM end a register or watch.
func run(args []string, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return runContext(ctx, args, stdout, stderr)
}

// runContext is run with ctx standing for the signals.
func runContext(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	err := dispatch(ctx, args, stdout, stderr)
	if err == nil {
		return 0
	}
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprint(stdout, usageText)
		return 0
	}
	fmt.Fprintf(stderr, "discoverctl: %s\n", oneLine(errMessage(err)))
	var ue *usageError
	if errors.As(err, &ue) {
		fmt.Fprintln(stderr, "run 'discoverctl --help' for usage")
		return exitUsage
	}
	return 1
}

func dispatch(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	g := globals{timeout: 5 * time.Second}
	fs := newFlagSet("discoverctl")
	g.register(fs)
	showVersion := fs.Bool("version", false, "print the version and exit")
	if err := fs.Parse(args); err != nil {
		return flagError(err)
	}
	if *showVersion {
		fmt.Fprintln(stdout, version.String("discoverctl"))
		return nil
	}
	if fs.NArg() == 0 {
		return usagef("no command given")
	}
	name, rest := fs.Arg(0), fs.Args()[1:]
	if name == "help" {
		return flag.ErrHelp
	}
	if sub, ok := subcommands[name]; ok {
		if len(rest) == 0 {
			return usagef("%s needs a subcommand: %s", name, sub)
		}
		name, rest = name+" "+rest[0], rest[1:]
	}
	cmd, ok := commands[name]
	if !ok {
		return usagef("unknown command %q", name)
	}
	cfs := newFlagSet("discoverctl " + name)
	g.register(cfs)
	runCmd := cmd.setup(cfs)
	pos, err := parseInterleaved(cfs, rest)
	if err != nil {
		return flagError(err)
	}
	if len(pos) != cmd.nargs {
		return usagef("%s takes %d argument(s) (%s), got %d", name, cmd.nargs, cmd.args, len(pos))
	}
	if g.timeout <= 0 {
		return usagef("--timeout must be positive")
	}
	var servers []string
	if g.server != "" {
		servers = strings.Split(g.server, ",")
	}
	c := client.NewWithOptions(servers, client.WithRetryTimeout(g.timeout))
	defer c.Close()
	e := &env{globals: g, ctx: ctx, stdout: stdout, stderr: stderr, c: c}
	if !cmd.long {
		var cancel context.CancelFunc
		e.ctx, cancel = context.WithTimeout(ctx, g.timeout)
		defer cancel()
	}
	return runCmd(e, pos)
}

func newFlagSet(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	return fs
}

func flagError(err error) error {
	if errors.Is(err, flag.ErrHelp) {
		return err
	}
	return &usageError{err.Error()}
}

// parseInterleaved parses flags anywhere among the positional arguments,
// which it returns; everything after "--" is positional.
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var tail []string
	if i := slices.Index(args, "--"); i >= 0 {
		args, tail = args[:i], args[i+1:]
	}
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			return append(pos, tail...), nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

// errMessage is the message of err for a person: an api.Error's message
// without its code.
func errMessage(err error) string {
	var ae *api.Error
	if errors.As(err, &ae) && err == error(ae) {
		return ae.Message
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return "timed out: " + err.Error()
	}
	return err.Error()
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}
